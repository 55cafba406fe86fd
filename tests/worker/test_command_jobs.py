"""`command` jobs on real workers: real processes, a real venv, the embedded stack (where
the kind is on by default), an API process for the client and the CLI.

One stack and one venv for the module (a venv with the host's site packages and no
package to install: nothing downloads).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from submitter.api.app import create_app
from submitter.client import Client, JobHandle
from tests.conftest import Stack, eventually
from tests.usercode import artifact, host_processes, submit_command

VENV = {"name": "cmdtest", "packages": [], "system_site_packages": True}
ANALYSE = """\
import csv, json, os, sys
import submitter_metrics
rows = list(csv.DictReader(open("data/amounts.csv")))
os.makedirs("out", exist_ok=True)
json.dump({"rows": len(rows), "total": sum(int(r["amount"]) for r in rows),
           "prefix": sys.prefix, "cwd": os.getcwd()}, open("out/summary.json", "w"))
json.dump(dict(os.environ), open("out/env.json", "w"))
open("out/scratch.tmp", "w").write("not collected")
for step in range(5):
    submitter_metrics.log("loss", 1 / (step + 1), step=step)
with open(os.environ["SUBMITTER_METRICS"], "a") as out:
    out.write('{"name": "accuracy", "value": 0.9}\\n')
    out.write('this is not a metric\\n')
print("analysed", len(rows), "rows", flush=True)
print("a warning", file=sys.stderr)
"""


@pytest.fixture
def cmd(command_stack: tuple[Stack, str]) -> tuple[Stack, str]:
    return command_stack


def _submit(stack: Stack, spec: dict[str, Any], expect: int = 202, role: str = "user") -> Any:
    return submit_command(stack, spec, role=role, expect=expect)


def test_venv_dataset_outputs_metrics_and_no_secrets(
    cmd: tuple[Stack, str], tmp_path: Path
) -> None:
    stack, url = cmd
    csv = "amount\n" + "".join(f"{i}\n" for i in range(1, 101))
    upload = stack.api.post(
        "/api/v1/datasets",
        files={"file": ("amounts.csv", io.BytesIO(csv.encode()), "text/csv")},
        data={"name": "cmd-amounts"},
        headers=stack.headers("user"),
    )
    assert upload.status_code in (200, 201), upload.text
    job = _submit(
        stack,
        {
            "command": ["python", "analyse.py"],
            "environment": {"venv": VENV},
            "files": {
                "provide": [
                    {"source": "dataset:cmd-amounts", "target": "data/amounts.csv"},
                    {"source": f"inline:{ANALYSE}", "target": "analyse.py"},
                ],
                "collect": ["out/*.json"],
            },
            "env": {"GREETING": "hello 'world' $(x)"},
            "resources": {"cpus": 1},
        },
    )
    done = stack.wait(job["id"], timeout=180)
    log = "\n".join(stack.logs(job["id"]))
    assert done["state"] == "succeeded", (done, log)
    assert "analysed 100 rows" in log and "a warning" in log  # streamed stdout and stderr
    assert "venv cmdtest created" in log
    assert "metrics: line skipped: not JSON" in log, log

    summary = json.loads(artifact(stack, job["id"], "out/summary.json"))
    assert summary["rows"] == 100 and summary["total"] == 5050
    venvs = stack.backend.settings.home / "submitter" / "venvs"
    assert summary["prefix"].startswith(f"{venvs}/cmdtest-"), summary
    names = {a["name"] for a in done_artifacts(stack, job["id"])}
    assert {"out/summary.json", "out/env.json", "stdout.log", "stderr.log"} <= names
    assert "out/scratch.tmp" not in names
    assert b"analysed 100 rows" in artifact(stack, job["id"], "stdout.log")
    assert done["result"]["exit_code"] == 0 and done["result"]["metrics"] == 6

    # The environment the process saw: allow-listed, none of the worker's secrets.
    env = json.loads(artifact(stack, job["id"], "out/env.json"))
    assert env["GREETING"] == "hello 'world' $(x)"
    assert sorted(k for k in env if k.startswith("SUBMITTER_")) == [
        "SUBMITTER_JOB_ID",
        "SUBMITTER_METRICS",
    ]
    assert not [k for k in env if k.startswith(("AWS_", "HPC_", "DATABASE", "CELERY"))]
    secrets = [v for k, v in stack.backend.env.items() if "KEY" in k or "URL" in k]
    secrets += [os.environ["AWS_SECRET_ACCESS_KEY"]]
    assert not [k for k, v in env.items() if any(s in v for s in secrets)], env
    assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["VIRTUAL_ENV"] == summary["prefix"]

    # Metrics: the API, the client (a DataFrame) and the CLI.
    response = stack.api.get(f"/api/v1/jobs/{job['id']}/metrics", headers=stack.headers("viewer"))
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 6
    loss = [(m["step"], m["value"]) for m in page["items"] if m["name"] == "loss"]
    assert loss == [(s, 1 / (s + 1)) for s in range(5)]
    assert [m["step"] for m in page["items"] if m["name"] == "accuracy"] == [0]
    with Client(url, stack.keys["viewer"]) as client:
        frame = JobHandle(client, job["id"]).metrics()
    assert list(frame.columns) == ["name", "step", "value", "at"] and len(frame) == 6
    assert frame[frame.name == "loss"].value.min() == pytest.approx(0.2)
    plot = tmp_path / "metrics.png"
    env_cli = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env_cli.update({"SUBMITTER_URL": url, "SUBMITTER_API_KEY": stack.keys["viewer"]})
    env_cli["COLUMNS"] = "200"
    shown = subprocess.run(
        [sys.executable, "-m", "submitter", "jobs", "metrics", job["id"], "--plot", str(plot)],
        env=env_cli,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "loss" in shown.stdout and "accuracy" in shown.stdout and "▁" in shown.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The web console's job page draws one chart per metric.
    browser = TestClient(stack.api.app)
    signed = browser.post("/ui/login", data={"key": stack.keys["viewer"]}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    page_html = browser.get(f"/ui/jobs/{job['id']}")
    assert page_html.status_code == 200 and 'id="job-metrics"' in page_html.text
    assert page_html.text.count("<polyline") == 2

    # The venv is built once per host and reused.
    again = _submit(
        stack,
        {"command": "python -c 'import sys; print(sys.prefix)'", "environment": {"venv": VENV}},
    )
    assert stack.wait(again["id"], timeout=120)["state"] == "succeeded"
    assert any("venv cmdtest reused" in line for line in stack.logs(again["id"]))


def done_artifacts(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    response = stack.api.get(f"/api/v1/jobs/{job_id}/artifacts", headers=stack.headers("viewer"))
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_memory_and_time_limits_fail_the_job_saying_so(cmd: tuple[Stack, str]) -> None:
    stack, _ = cmd
    hog = _submit(
        stack,
        {
            "command": ["python3", "-c", "block = bytearray(400_000_000); print('no')"],
            "resources": {"memory": "200M"},
        },
    )
    slow = _submit(stack, {"command": "echo started; sleep 60", "timeout_seconds": 1})
    hogged = stack.wait(hog["id"], timeout=60)
    assert hogged["state"] == "failed"
    assert "exceeded its memory limit of 200M" in hogged["error"], hogged["error"]
    assert "MemoryError" in hogged["error"]
    timed = stack.wait(slow["id"], timeout=60)
    assert timed["state"] == "failed"
    assert timed["error"].startswith("timed out after 1 s (timeout_seconds)"), timed["error"]
    assert "started" in stack.logs(slow["id"])


def test_cancel_stops_every_process_of_the_sandbox(cmd: tuple[Stack, str]) -> None:
    stack, _ = cmd
    # The shell and its children ignore SIGTERM, one left the process group: all of them
    # need the SIGKILL after the grace, and all of them get it.
    job = _submit(
        stack,
        {"command": "trap '' TERM; echo started; setsid sleep 3001 & sleep 3002 & wait"},
    )
    eventually(lambda: "started" in stack.logs(job["id"]), timeout=60)
    eventually(lambda: len(host_processes("sleep", "300")) == 2, timeout=30)
    response = stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("user"))
    assert response.status_code == 200, response.text
    assert stack.wait(job["id"])["state"] == "cancelled"
    eventually(lambda: not host_processes("sleep", "300"), timeout=30)
    eventually(lambda: any("(SIGKILL)" in x for x in stack.logs(job["id"])), timeout=30)


def test_it_is_a_permission_the_operator_can_turn_off(cmd: tuple[Stack, str]) -> None:
    stack, _ = cmd
    spec = {"command": ["true"]}
    _submit(stack, spec, expect=403, role="viewer")
    bad = _submit(
        stack,
        {
            "command": [],
            "env": {"SUBMITTER_DATABASE_URL": "x"},
            "environment": {"venv": {"name": "v", "packages": ["--index-url=http://x"]}},
        },
        expect=422,
    )
    fields = {".".join(str(p) for p in e["loc"]) for e in bad["detail"]}
    assert {"body.spec.command", "body.spec.environment.venv.packages"} <= fields, fields
    # The same database, an API whose operator turned the kind off.
    settings = stack.backend.settings.model_copy(update={"command_jobs_enabled": False})
    with TestClient(create_app(settings)) as api:
        response = api.post(
            "/api/v1/jobs",
            json={"kind": "command", "spec": spec},
            headers=stack.headers("admin"),
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "kind"] and "SUBMITTER_COMMAND_JOBS_ENABLED" in error["msg"]


def test_embedded_default_is_on_and_a_server_default_off(tmp_path: Path) -> None:
    from submitter.config import load_settings

    assert load_settings(home=tmp_path).command_jobs_allowed
    server = load_settings(home=tmp_path, database_url="postgresql://h/db")
    assert not server.command_jobs_allowed
    assert load_settings(
        home=tmp_path, database_url="postgresql://h/db", command_jobs_enabled=True
    ).command_jobs_allowed
