"""The sandbox itself, process by process: real bwrap sandboxes started by `supervise.run`,
no stack. Each limit is tried both ways it can be held: by the kernel's control groups
(root on this host) and by the watchdog (a non-root container, a cgroup v2 host).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from submitter.jobs.context import folder_prefix, remove_folders, sweep_folders
from submitter.sandbox import bwrap, cgroups, supervise
from tests.usercode import host_processes

pytestmark = pytest.mark.usefixtures("bubblewrap")
LIMITS = pytest.mark.parametrize("groups", [True, False], ids=["cgroups", "watchdog"])


class Run:
    """A job folder and what one sandboxed command printed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / ".submitter" / "tmp").mkdir(parents=True)
        self.lines: list[str] = []
        self.cancelled = threading.Event()
        self.groups: set[int] = set()

    def __call__(
        self, command: str, *, groups: bool = True, grace: float = 2, **limits: object
    ) -> supervise.Outcome:
        return supervise.run(
            supervise.Supervision(
                lambda _, line: self.lines.append(line), self.cancelled, grace, self.groups
            ),
            ["bash", "-c", command],
            view=bwrap.View(self.folder),
            sandboxed=True,
            env={"PATH": "/usr/bin:/bin", "HOME": bwrap.FOLDER},
            limits=supervise.Limits(**limits),  # type: ignore[arg-type]
            stdout=self.folder.parent / "stdout",
            stderr=self.folder.parent / "stderr",
            job_id="t" + os.urandom(4).hex(),
            cgroups=groups,
        )


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path / "job")


def test_it_sees_its_own_processes_and_files_only(run: Run, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    outcome = run(
        "id -u; ls /proc | grep -c '^[0-9]'; cat /proc/1/environ | tr '\\0' '\\n' | wc -l; "
        f"cat {secret} || echo no-secret; ls /root /etc/shadow /var 2>&1 | head -3; "
        "touch /usr/x 2>&1; echo hi > /tmp/t && echo tmp-ok; hostname"
    )
    assert outcome.exit_code == 0, run.lines
    said = "\n".join(run.lines)
    assert run.lines[0] == str(bwrap.UID)
    assert int(run.lines[1]) <= 6  # bwrap's init, bash, its pipeline: nothing of the host
    assert "no-secret" in said and "s3cret" not in said
    assert "Read-only file system" in said and "tmp-ok" in said
    assert run.lines[-1] == bwrap.HOSTNAME
    assert (run.folder / ".submitter" / "tmp" / "t").read_text() == "hi\n"


def test_the_network_is_its_own(run: Run) -> None:
    # Redis and PostgreSQL listen on this host's loopback; the sandbox has its own.
    outcome = run(
        "for port in 6379 5432; do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null "
        "&& echo reached $port || echo refused $port; done"
    )
    assert outcome.exit_code == 0
    assert run.lines == ["refused 6379", "refused 5432"]


def test_daemons_die_with_the_command_and_on_timeout(run: Run) -> None:
    outcome = run("setsid sleep 3101 & (sleep 3102 &) ; echo started")
    assert outcome.exit_code == 0 and run.lines == ["started"]
    assert not host_processes("sleep", "3101") and not host_processes("sleep", "3102")
    outcome = run("trap '' TERM; setsid sleep 3103 & sleep 3104", timeout_seconds=1, grace=0.5)
    assert outcome.stopped_for == "timeout" and outcome.killed
    assert not host_processes("sleep", "3103") and not host_processes("sleep", "3104")


@LIMITS
def test_memory_of_all_processes_together(run: Run, groups: bool) -> None:
    if groups and not cgroups.available():
        pytest.skip("this host gives no control groups")
    touch = "b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096])"
    hog = f'python3 -c "import time; {touch}; time.sleep(20)"'
    outcome = run(f"for i in 1 2 3 4; do {hog} & done; wait", memory_bytes=200 << 20, groups=groups)
    assert outcome.exceeded is not None and outcome.exceeded.limit == "memory", outcome


@LIMITS
def test_process_count(run: Run, groups: bool) -> None:
    if groups and not cgroups.available():
        pytest.skip("this host gives no control groups")
    outcome = run("for i in $(seq 40); do sleep 30 & done; wait", processes=10, groups=groups)
    assert outcome.exceeded is not None and outcome.exceeded.limit == "processes", outcome
    assert not host_processes("sleep", "30")


@LIMITS
def test_cpu_affinity_cannot_be_widened(run: Run, groups: bool) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to widen to")
    if groups and not cgroups.available():
        pytest.skip("this host gives no control groups")
    every = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    outcome = run(
        f"taskset -pc {every} $$ >/dev/null 2>&1; sleep 1.5; taskset -pc $$ | sed 's/.*: //'",
        cpus=[0],
        groups=groups,
    )
    assert outcome.exit_code == 0, run.lines
    assert run.lines[-1] == "0"


def test_disk_the_folder_and_one_file(run: Run) -> None:
    many = run(
        "for i in $(seq 40); do head -c 1048576 /dev/urandom > f$i; done; sleep 5",
        disk_bytes=10 << 20,
    )
    assert many.exceeded is not None and many.exceeded.limit == "disk", many
    big = run("rm f*; head -c 30000000 /dev/zero > big; echo done", disk_bytes=10 << 20)
    # `head` died of SIGXFSZ at the limit (the shell said so and went on); the folder is
    # at its limit, which fails the job.
    assert any("File size limit exceeded" in line for line in big.stderr_tail), big
    assert big.exceeded is not None and big.exceeded.limit == "disk", big
    assert (run.folder / "big").stat().st_size <= 10 << 20


def test_cancel_ends_it_and_every_process(run: Run) -> None:
    threading.Timer(1.0, run.cancelled.set).start()
    outcome = run("trap '' TERM; setsid sleep 3105 & sleep 3106", grace=1)
    assert outcome.stopped_for == "cancelled"
    assert not host_processes("sleep", "3105") and not host_processes("sleep", "3106")


def test_the_view_leaves_out_secrets(tmp_path: Path) -> None:
    args = bwrap.argv(bwrap.View(tmp_path), ["true"], info_fd=3)
    mounted = {args[i + 1] for i, a in enumerate(args) if a in ("--ro-bind", "--bind")}
    assert not {"/etc", "/etc/shadow", "/root", "/home", "/var", "/run", "/"} & mounted
    assert "--unshare-all" in args and "--share-net" not in args
    assert "--share-net" in bwrap.argv(bwrap.View(tmp_path, network=True), ["true"], info_fd=3)


def test_a_killed_process_folders_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tempfile

    # A process that made a job folder and died without its `finally`.
    code = (
        "import tempfile, os; from submitter.jobs.context import folder_prefix; "
        "print(tempfile.mkdtemp(prefix=folder_prefix('deadjob')))"
    )
    left = Path(subprocess.check_output([sys.executable, "-c", code], text=True).strip())
    (left / "data").mkdir()
    (left / "data" / "x").write_text("staged")
    os.chmod(left / "data", 0)  # a job may take its own permissions away
    mine = Path(tempfile.mkdtemp(prefix=folder_prefix("livejob")))
    assert sweep_folders() >= 1
    assert not left.exists() and mine.exists()
    remove_folders("livejob")
    assert not mine.exists()


def test_a_killed_process_control_groups_are_swept() -> None:
    import subprocess
    import sys

    if not cgroups.available():
        pytest.skip("this host gives no control groups")
    code = (
        "from submitter.sandbox.cgroups import Cgroups; "
        "print(Cgroups.make('deadjob', memory_bytes=None, cpus=None, processes=8) is not None)"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "True"
    mine = cgroups.Cgroups.make("livejob", memory_bytes=None, cpus=None, processes=8)
    assert mine is not None
    assert _groups("deadjob") and _groups("livejob")
    assert cgroups.sweep() >= 3
    assert not _groups("deadjob") and _groups("livejob")
    assert mine.remove()


def _groups(job_id: str) -> list[Path]:
    """This process's controllers' Submitter groups of the job (every maker)."""
    own = cgroups._own_paths().values()
    return [g for folder in own for g in folder.glob(f"{cgroups.PREFIX}{job_id}-p*")]
