"""Issue 24's findings, tried again as a hostile `user` key would, on the embedded stack
(the API, a real worker, everything as this host's root): each must now do no harm.

One stack for all of them and the command-job tests (`command_stack`); each test filters
by its own jobs.
"""

from __future__ import annotations

import glob
import os
import shlex
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from submitter.api.app import create_app
from submitter.sandbox import cgroups
from tests.conftest import Stack, eventually
from tests.usercode import artifact, host_processes, submit_command

EVIL_PYPROJECT = """\
[build-system]
requires = []
build-backend = "evil"
backend-path = ["."]

[project]
name = "evilpkg"
version = "0"
"""
EVIL_BACKEND = """\
import os, sys

def _leak(*args, **kwargs):
    print("LEAKED-ENV", sorted(os.environ.items()), file=sys.stderr)
    for path in sys.argv[1:] + [os.environ.get("LEAK_PATH", "")]:
        print("LEAKED-LS", path, os.path.exists(path), file=sys.stderr)
    raise SystemExit("the evil build backend gives up")

get_requires_for_build_wheel = prepare_metadata_for_build_wheel = build_wheel = _leak
"""


def _submit(stack: Stack, spec: dict[str, Any], role: str = "user", expect: int = 202) -> Any:
    return submit_command(stack, spec, role=role, expect=expect)


def _artifact(stack: Stack, job_id: str, name: str) -> str:
    return artifact(stack, job_id, name).decode(errors="replace")


def _secrets(stack: Stack) -> list[str]:
    """Values a job must never see: the worker's keys, passwords and cloud secrets."""
    found = [stack.backend.env["SUBMITTER_ADMIN_KEY"], os.environ["AWS_SECRET_ACCESS_KEY"]]
    return [*found, *stack.keys.values()]


def _database(stack: Stack) -> Path:
    """The embedded stack's metadata DB (API keys, jobs): the prize of finding 1."""
    db = stack.backend.home / "submitter.db"
    assert db.is_file()
    return db


def test_a_job_reaches_no_secret_no_file_and_no_service(
    command_stack: tuple[Stack, str],
) -> None:
    stack, url = command_stack
    home, db = stack.backend.home, _database(stack)
    port = url.rsplit(":", 1)[1]
    script = f"""
mkdir -p out
for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$f"; done > out/environ.txt
ls /proc | grep -c '^[0-9]' > out/processes.txt
ls {shlex.quote(str(home))} > out/home.txt 2>&1
cat {shlex.quote(str(db))} > out/db.txt 2>&1
(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached > out/api.txt \\
    || echo refused > out/api.txt
cat /etc/shadow > out/shadow.txt 2>&1
echo done
"""
    job = _submit(stack, {"command": script, "files": {"collect": ["out/*"]}})
    done = stack.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", (done, stack.logs(job["id"]))
    environ = _artifact(stack, job["id"], "out/environ.txt")
    assert "SUBMITTER_JOB_ID" in environ  # it read what there was to read: its own
    everything = environ + "\n".join(stack.logs(job["id"]))
    assert not [s for s in _secrets(stack) if s in everything]
    assert int(_artifact(stack, job["id"], "out/processes.txt")) <= 6
    assert "No such file or directory" in _artifact(stack, job["id"], "out/home.txt")
    assert "No such file or directory" in _artifact(stack, job["id"], "out/db.txt")
    assert _artifact(stack, job["id"], "out/api.txt").strip() == "refused"
    assert "No such file or directory" in _artifact(stack, job["id"], "out/shadow.txt")


def test_a_shared_venv_cannot_be_poisoned(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    venv = {"name": "team", "packages": [], "system_site_packages": True}
    poison = (
        'site=$(python -c "import sysconfig; print(sysconfig.get_paths()[\\"purelib\\"])"); '
        'echo "print(\\"POISONED\\")" > "$site/sitecustomize.py" || echo refused; '
        'touch "$VIRTUAL_ENV/bin/python-extra" || echo refused'
    )
    first = _submit(stack, {"command": poison, "environment": {"venv": venv}})
    done = stack.wait(first["id"], timeout=180)
    log = stack.logs(first["id"])
    assert done["state"] == "succeeded", (done, log)
    assert log.count("refused") == 2 and any("Read-only file system" in x for x in log), log
    path = done["result"]["venv"]
    assert not glob.glob(f"{path}/lib/python*/site-packages/sitecustomize.py")
    second = _submit(stack, {"command": "python -c 'print(1)'", "environment": {"venv": venv}})
    assert stack.wait(second["id"], timeout=120)["state"] == "succeeded"
    assert "POISONED" not in stack.logs(second["id"])


def test_a_build_backend_runs_sandboxed_without_secrets(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    db = str(_database(stack))
    spec = {
        "command": ["true"],
        "environment": {
            "venv": {"name": "evil", "packages": ["evilpkg @ file:///job/evilpkg"]},
        },
        "files": {
            "provide": [
                {"source": f"inline:{EVIL_PYPROJECT}", "target": "evilpkg/pyproject.toml"},
                {"source": f"inline:{EVIL_BACKEND}", "target": "evilpkg/evil.py"},
            ]
        },
        "env": {"LEAK_PATH": db},
    }
    job = _submit(stack, spec)
    done = stack.wait(job["id"], timeout=300)
    log = "\n".join(stack.logs(job["id"]))
    assert done["state"] == "failed", done
    assert "LEAKED-ENV" in log, log  # the backend ran, and printed all it had
    assert f"LEAKED-LS {db} False" in log, log
    assert done["error"].startswith("creating venv evil on this worker failed: pip install")
    assert len(done["error"]) < 1000 and "LEAKED-ENV" not in done["error"]
    whole = log + done["error"] + _artifact(stack, job["id"], "venv-build.log")
    worker_log = "\n".join(p.log_path.read_text(errors="replace") for p in stack.processes)
    assert not [s for s in _secrets(stack) if s in whole or s in worker_log]
    # Where the operator has not allowed direct references (the default), no build at all.
    settings = stack.backend.settings.model_copy(update={"venv_direct_references": False})
    with TestClient(create_app(settings)) as api:
        refused = api.post(
            "/api/v1/jobs",
            json={"kind": "command", "spec": spec},
            headers=stack.headers("user"),
        )
        # A SLURM job's venv is built by the same rule (on the cluster, by its account).
        slurm = {"cluster": "none", "command": "true", "environment": spec["environment"]}
        refused_too = api.post(
            "/api/v1/jobs", json={"kind": "slurm", "spec": slurm}, headers=stack.headers("user")
        )
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "spec", "environment", "venv", "packages", 0]
    assert "SUBMITTER_VENV_DIRECT_REFERENCES" in error["msg"]
    assert refused_too.status_code == 422, refused_too.text
    assert error["loc"] in [e["loc"] for e in refused_too.json()["detail"]]


def test_a_hostile_metrics_file_holds_no_slot(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    fifo = _submit(stack, {"command": 'rm -f "$SUBMITTER_METRICS"; mkfifo "$SUBMITTER_METRICS"'})
    zero = _submit(
        stack, {"command": 'rm -f "$SUBMITTER_METRICS"; ln -s /dev/zero "$SUBMITTER_METRICS"'}
    )
    for job in (fifo, zero):
        assert stack.wait(job["id"], timeout=60)["state"] == "succeeded"
        assert any("not a regular file" in x for x in stack.logs(job["id"])), job
    after = _submit(stack, {"command": ["echo", "a slot is free"]})
    assert stack.wait(after["id"], timeout=60)["state"] == "succeeded"


def test_limits_hold_and_are_named(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    touch = "b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096])"
    hog = f'python3 -c "import time; {touch}; time.sleep(30)"'
    memory = _submit(
        stack,
        {"command": f"for i in 1 2 3 4; do {hog} & done; wait", "resources": {"memory": "200M"}},
    )
    processes = _submit(
        stack,
        {"command": "for i in $(seq 40); do sleep 30 & done; wait", "resources": {"processes": 10}},
    )
    disk = _submit(
        stack,
        {
            "command": "for i in $(seq 30); do head -c 1048576 /dev/urandom > f$i; done; sleep 30",
            "resources": {"disk": "10M"},
        },
    )
    every = len(os.sched_getaffinity(0))
    cpus = _submit(
        stack,
        {
            "command": [
                "python3",
                "-c",
                f"import os, time; os.sched_setaffinity(0, range({every})); time.sleep(1); "
                "print('cpus', len(os.sched_getaffinity(0)))",
            ],
            "resources": {"cpus": 1},
        },
    )
    expected = {
        memory["id"]: "exceeded its memory limit of 200M (resources.memory)",
        processes["id"]: "exceeded its processes limit of 10 (resources.processes)",
        disk["id"]: "exceeded its disk limit of 10M (resources.disk): its folder held",
    }
    for job_id, message in expected.items():
        done = stack.wait(job_id, timeout=120)
        assert done["state"] == "failed" and message in done["error"], done
    assert stack.wait(cpus["id"], timeout=60)["state"] == "succeeded"
    assert "cpus 1" in stack.logs(cpus["id"])
    assert not host_processes("sleep", "30")


def test_a_daemon_dies_with_a_timed_out_job(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    job = _submit(stack, {"command": "setsid sleep 3201 & sleep 60", "timeout_seconds": 1})
    done = stack.wait(job["id"], timeout=60)
    assert done["state"] == "failed" and done["error"].startswith("timed out"), done
    assert not host_processes("sleep", "3201")


def test_links_are_not_collected(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    db = shlex.quote(str(_database(stack)))
    script = (
        "mkdir out; echo data > out/a; ln out/a out/b; ln -s /etc/passwd out/p; "
        f"ln -s / out/root; echo mine > out/plain; ln {db} out/db 2>&1 || echo cannot-link"
    )
    job = _submit(stack, {"command": script, "files": {"collect": ["out/*", "out/root/etc/*"]}})
    done = stack.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert done["result"]["collected"] == ["out/plain"]
    assert "cannot-link" in stack.logs(job["id"])


def test_a_killed_pool_process_leaves_no_folder(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    job = _submit(stack, {"command": "echo started; sleep 6001"})
    eventually(lambda: "started" in stack.logs(job["id"]), timeout=60)
    pattern = os.path.join(tempfile.gettempdir(), f"submitter-job-{job['id']}-p*-command-*")
    (folder,) = glob.glob(pattern)
    pool = int(folder.rsplit("-p", 1)[1].split("-", 1)[0])
    sandboxed = host_processes("sleep", "6001")
    assert sandboxed
    os.kill(pool, signal.SIGKILL)
    # The sandbox dies with its pool process; the pool's next process sweeps the folder.
    # (The job itself may run again once its lease lapses: in a folder of its new process.)
    eventually(lambda: not set(sandboxed) & set(host_processes("sleep", "6001")), timeout=30)
    eventually(lambda: not os.path.exists(folder), timeout=60)
    # So do the sandbox's control groups (made with the killed pool process's pid), at the
    # latest when the next command job starts (a group is busy until its last process is
    # reaped, which may come after the new pool process's sweep).
    after = _submit(stack, {"command": ["true"]})
    assert stack.wait(after["id"], timeout=60)["state"] == "succeeded"
    groups = [
        g
        for own in cgroups._own_paths().values()
        for g in own.glob(f"{cgroups.PREFIX}{job['id']}-p{pool}-*")
    ]
    assert not groups, groups
    stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("admin"))


def test_without_a_sandbox_only_admins_run_user_code(command_stack: tuple[Stack, str]) -> None:
    stack, _ = command_stack
    settings = stack.backend.settings.model_copy(update={"sandbox": "none"})
    with TestClient(create_app(settings)) as api:
        spec = {"kind": "command", "spec": {"command": ["echo", "unsandboxed"]}}
        refused = api.post("/api/v1/jobs", json=spec, headers=stack.headers("user"))
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["detail"]
        assert error["loc"] == ["body", "kind"] and "apt-get install bubblewrap" in error["msg"]
        schedule = {"name": "hostile", "interval_seconds": 60, **spec}
        refused = api.post("/api/v1/schedules", json=schedule, headers=stack.headers("user"))
        assert refused.status_code == 422, refused.text
        admin = api.post("/api/v1/jobs", json=spec, headers=stack.headers("admin"))
        assert admin.status_code == 202, admin.text
    assert stack.wait(admin.json()["id"], timeout=60)["state"] == "succeeded"


@pytest.mark.parametrize("setting", ["auto", "bwrap"])
def test_with_a_sandbox_users_run_user_code(command_stack: tuple[Stack, str], setting: str) -> None:
    stack, _ = command_stack
    settings = stack.backend.settings.model_copy(update={"sandbox": setting})
    with TestClient(create_app(settings)) as api:
        spec = {"kind": "command", "spec": {"command": ["echo", "sandboxed"]}}
        accepted = api.post("/api/v1/jobs", json=spec, headers=stack.headers("user"))
    assert accepted.status_code == 202, accepted.text
    done = stack.wait(accepted.json()["id"], timeout=60)
    assert done["state"] == "succeeded" and done["result"]["sandboxed"] is True
