"""`submitter up`'s supervisor: a child that dies is restarted and the others keep serving;
one that keeps dying at start stops all with the reason; SIGTERM stops all.

Real processes throughout: tiny `python -c` commands for the rules, and `submitter up` on
an embedded backend for the whole stack.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from submitter.cli.supervisor import Supervisor
from tests.cli.test_cli import _free_port
from tests.conftest import Backend, Process, eventually

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width: compare words, not lines."""
    return " ".join(text.split())


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for a parent that will not reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_child_that_keeps_dying_at_start_stops_all_and_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = [sys.executable, "-c", "import sys; print('port 7500 in use'); sys.exit(3)"]
    supervisor = Supervisor(
        {"steady": SLEEP, "broken": broken},
        env=dict(os.environ),
        grace=10,
        backoff_initial=0.01,
        start_seconds=60,
        start_retries=4,
        output=io.BytesIO(),
    )
    code = supervisor.run()
    err = _flat(capsys.readouterr().err)
    assert code == 3, err
    # Backed off, doubling, between the quick exits; then gave up naming child and cause.
    for n, delay in ((1, "0.01"), (2, "0.02"), (3, "0.04")):
        assert "exit code 3 after" in err and f"restart {n} in {delay} s" in err, err
    assert "broken" in err and "4 times in a row (last: exit code 3)" in err, err
    assert "Last output of broken: port 7500 in use" in err, err
    # The others were stopped with it, by SIGTERM.
    steady = supervisor.children["steady"].popen
    assert steady is not None and steady.returncode == -signal.SIGTERM


def test_a_child_that_dies_after_running_is_restarted_alone_with_its_leftovers_killed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Starts a process of its own (like a worker's pool) in its group, runs a while, dies.
    flaky = [
        sys.executable,
        "-c",
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('leftover', p.pid, flush=True)\n"
        "time.sleep(0.5)\n"
        "sys.exit(1)\n",
    ]
    output = io.BytesIO()
    supervisor = Supervisor(
        {"steady": SLEEP, "flaky": flaky},
        env=dict(os.environ),
        grace=10,
        backoff_initial=0.01,
        start_seconds=0.2,  # every run of flaky lasts longer: it never counts as "at start"
        start_retries=2,
        output=output,
    )
    steady_pids: set[int] = set()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while supervisor.children["flaky"].restarts < 3 and time.monotonic() < deadline:
            popen = supervisor.children["steady"].popen
            if popen is not None:
                steady_pids.add(popen.pid)
            time.sleep(0.05)
        supervisor.request_stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = supervisor.run()
    watcher.join()
    err = _flat(capsys.readouterr().err)
    assert code == 0, err
    assert supervisor.children["flaky"].restarts >= 3, err
    assert "flaky (pid" in err and "exit code 1 after" in err and "giving up" not in err
    assert len(steady_pids) == 1, "the steady child was restarted too"
    leftovers = [int(line.split()[1]) for line in output.getvalue().decode().splitlines()]
    assert len(leftovers) >= 3
    assert not [pid for pid in leftovers if _alive(pid)], "a dead child's group outlived it"


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        children = subprocess.run(
            ["pgrep", "-P", str(todo.pop())], capture_output=True, text=True
        ).stdout.split()
        for child in map(int, children):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _children_by_role(up: Process) -> dict[str, int]:
    """The api / worker / beat main processes of `up`, by their command line."""
    roles: dict[str, int] = {}
    out = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for role in ("api", "worker", "beat"):
            if role.encode() in argv:
                roles[role] = pid
    return roles


def _all_roles(up: Process) -> dict[str, int] | None:
    roles = _children_by_role(up)
    return roles if len(roles) == 3 else None


@pytest.mark.parametrize("fresh_backend", ["embedded"], indirect=True)
def test_up_restarts_a_killed_worker_while_the_api_keeps_serving(fresh_backend: Backend) -> None:
    port = _free_port()
    fresh_backend.env["SUBMITTER_API_PORT"] = str(port)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {fresh_backend.admin_key}"}
    up = Process(fresh_backend, "up", "--concurrency=1")
    seen: set[int] = set()
    try:

        def succeeded(message: str) -> None:
            response = httpx.post(
                f"{url}/api/v1/jobs",
                json={"kind": "echo", "spec": {"message": message}},
                headers=headers,
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]

            def done() -> bool:
                # The API answers all along, also while the worker is down.
                assert httpx.get(f"{url}/health").status_code == 200
                state = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()["state"]
                assert state in ("queued", "running", "succeeded"), (state, up.tail())
                return bool(state == "succeeded")

            eventually(done, timeout=90)

        def api_up() -> bool:
            assert up.popen.poll() is None, up.tail()
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(api_up, timeout=90)
        succeeded("before")
        before: dict[str, int] = eventually(lambda: _all_roles(up))
        seen |= _descendants(up.pid)
        os.kill(before["worker"], signal.SIGKILL)

        succeeded("after the worker was killed")
        after = _children_by_role(up)
        assert after["worker"] != before["worker"], "the worker was not restarted"
        assert (after["api"], after["beat"]) == (before["api"], before["beat"]), "others restarted"
        said = _flat(up.log_path.read_text(errors="replace"))
        assert f"worker (pid {before['worker']}) killed by SIGKILL" in said, up.tail()

        seen |= _descendants(up.pid)
        os.kill(up.pid, signal.SIGTERM)
        assert up.popen.wait(60) == 0, up.tail()
        assert not [pid for pid in seen if _alive(pid)], "a process outlived up"
    finally:
        up.stop()
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
