"""The `submitter` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from submitter.client import Client
from tests.conftest import Backend, Process, make_backend


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    env: dict[str, str], *args: str, timeout: float = 60, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    full_env.update(env)
    full_env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "submitter", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Backend]:
    with make_backend("embedded", tmp_path) as backend:
        yield backend


@pytest.fixture
def served(embedded: Backend) -> Iterator[dict[str, str]]:
    """An API and a worker as processes; yields the client environment."""
    port = _free_port()
    embedded.env["SUBMITTER_API_PORT"] = str(port)
    processes = [Process(embedded, "api"), Process(embedded, "worker", "--concurrency=1")]
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    try:
        yield {"SUBMITTER_URL": url, "SUBMITTER_API_KEY": embedded.admin_key}
    finally:
        for process in processes:
            process.stop()


def test_keys_create_list_revoke(embedded: Backend) -> None:
    created = run(embedded.env, "keys", "create", "alice", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_")
    listed = run(embedded.env, "keys", "list")
    assert "alice" in listed.stdout and "viewer" in listed.stdout
    assert key not in listed.stdout  # only a prefix is shown
    duplicate = run(embedded.env, "keys", "create", "alice")
    assert duplicate.returncode == 1
    assert "exists" in duplicate.stdout
    assert run(embedded.env, "keys", "revoke", "alice").returncode == 0
    assert run(embedded.env, "keys", "revoke", "bob").returncode == 1


def test_jobs_commands_over_http(served: dict[str, str]) -> None:
    submitted = run(
        served, "jobs", "submit", "echo", "--spec", '{"message": "hi"}', "--wait", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["state"] == "succeeded"
    assert job["result"]["message"] == "hi"

    shown = run(served, "jobs", "show", job["id"])
    assert "succeeded" in shown.stdout
    # At 80 columns the short id is whole on its line, and it is taken wherever an id is.
    listed = run(served, "jobs", "list", "--state", "succeeded", columns=80)
    short = job["id"][:12]
    assert short in listed.stdout, listed.stdout
    assert run(served, "jobs", "show", short, "--json").stdout.count(job["id"]) >= 1
    logs = run(served, "jobs", "logs", short)
    assert "echo: hi" in logs.stdout
    assert "[dim]" not in logs.stdout and "[/dim]" not in logs.stdout
    too_short = run(served, "jobs", "show", job["id"][:7])
    assert too_short.returncode == 1 and "not found" in too_short.stderr

    long_id = run(
        served, "jobs", "submit", "echo", "--spec", '{"message": "slow", "sleep_seconds": 60}'
    ).stdout.strip()
    cancelled = run(served, "jobs", "cancel", long_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    watched = run(served, "jobs", "watch", long_id)
    assert watched.returncode == 1  # it did not succeed


def test_jobs_submit_reports_bad_input(served: dict[str, str]) -> None:
    bad_json = run(served, "jobs", "submit", "echo", "--spec", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    unknown = run(served, "jobs", "submit", "train-a-dragon")
    assert unknown.returncode == 1
    assert "kind" in unknown.stderr and "unknown job kind" in unknown.stderr
    no_key = run(
        {"SUBMITTER_URL": served["SUBMITTER_URL"], "SUBMITTER_HOME": "/nonexistent"}, "jobs", "list"
    )
    assert no_key.returncode == 1
    assert "401" in no_key.stderr


def test_jobs_submit_many_from_a_file_and_stdin(served: dict[str, str], tmp_path: Path) -> None:
    requests = tmp_path / "jobs.jsonl"
    requests.write_text(
        '{"kind": "echo", "spec": {"message": "one"}}\n'
        "\n"
        '{"kind": "echo", "spec": {"message": "two"}, "depends_on": ["#0"]}\n'
    )
    submitted = run(served, "jobs", "submit-many", str(requests))
    assert submitted.returncode == 0, submitted.stderr
    ids = submitted.stdout.split()
    assert len(ids) == 2
    with Client(served["SUBMITTER_URL"], served["SUBMITTER_API_KEY"]) as client:
        assert client.job(ids[1])["depends_on"] == [ids[0]]
        # The client's own call, and a job of it waited on.
        [job] = client.submit_many([{"kind": "echo", "spec": {"message": "three"}}])
        assert client.wait(job["id"], timeout=60)["state"] == "succeeded"
        assert client.wait(ids[1], timeout=60)["state"] == "succeeded"
    # Errors name the line (blank lines count); nothing of the file is stored.
    bad = subprocess.run(
        [sys.executable, "-m", "submitter", "jobs", "submit-many", "-"],
        input='{"kind": "echo", "spec": {"message": "ok"}}\n\n{"kind": "echo", "spec": {}}\n',
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}, **served},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "line 3.spec.message" in bad.stderr, bad.stderr
    not_json = run(served, "jobs", "submit-many", str(requests.with_name("missing.jsonl")))
    assert not_json.returncode == 2 and "cannot read" in not_json.stderr


def test_bad_setting_stops_startup_naming_the_key(tmp_path: Path) -> None:
    result = run({"SUBMITTER_HOME": str(tmp_path), "SUBMITTER_API_PORT": "seventy"}, "api")
    assert result.returncode == 2
    assert "SUBMITTER_API_PORT" in result.stderr


def _wait_ready(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready in 60 s"
        assert process is None or process.poll() is None, "the server process exited"
        time.sleep(0.2)


def test_up_runs_the_stack_and_one_sigterm_stops_all(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env.update(SUBMITTER_HOME=str(tmp_path), SUBMITTER_API_PORT=str(port))
    up = subprocess.Popen(
        [sys.executable, "-m", "submitter", "up", "--concurrency=1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", up)
        # No SUBMITTER_API_KEY: the client finds the key `up` wrote into its home.
        client_env = {"SUBMITTER_URL": f"http://127.0.0.1:{port}", "SUBMITTER_HOME": str(tmp_path)}
        done = run(client_env, "jobs", "submit", "echo", "--spec", '{"message": "up"}', "--wait")
        assert done.returncode == 0, done.stderr
        children = subprocess.run(
            ["pgrep", "-P", str(up.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 3  # api, worker, beat
        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived up"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def test_demo_finishes_on_a_fresh_home() -> None:
    result = run({}, "demo", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    home = re.search(r"home (\S+)", result.stdout)
    assert home is not None, result.stdout
    assert not Path(home.group(1)).exists(), "the demo left its temporary home behind"
    assert "leaderboard" in result.stdout
    assert "predictions (production)" in result.stdout


def test_datasets_commands_and_job_artifacts(served: dict[str, str], tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("name;age;city\nann;31;Oulu\nbob;45;Turku\ncid;28;Oulu\n")
    uploaded = run(served, "datasets", "upload", str(csv), "--name", "people", "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert dataset["row_count"] == 3 and dataset["version"] == 1

    listed = run(served, "datasets", "list")
    assert "people" in listed.stdout
    shown = run(served, "datasets", "show", "people@1")
    assert "age" in shown.stdout and "int64" in shown.stdout
    preview = run(served, "datasets", "preview", "people", "--limit", "2", "--json")
    assert json.loads(preview.stdout)["rows"] == [["ann", 31, "Oulu"], ["bob", 45, "Turku"]]
    mean = run(
        served,
        "datasets",
        "aggregate",
        "people",
        "--fn",
        "mean",
        "--column",
        "age",
        "--where",
        "city:Oulu",
    )
    assert json.loads(mean.stdout)["value"] == 29.5
    bad = run(served, "datasets", "aggregate", "people", "--fn", "median", "--column", "age")
    assert bad.returncode == 1 and "fn" in bad.stderr
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"column_{i}" for i in range(30)) + "\n" + ",".join("1" * 30) + "\n")
    assert run(served, "datasets", "upload", str(wide), "--name", "wide").returncode == 0
    previewed = run(served, "datasets", "preview", "wide", columns=80)
    assert previewed.returncode == 0, previewed.stderr
    assert all(len(line) <= 80 for line in previewed.stdout.splitlines()), previewed.stdout
    assert "column_0" in previewed.stdout and "more columns not shown" in previewed.stdout
    picked = run(served, "datasets", "preview", "wide", "--columns", "column_29", columns=80)
    assert "column_29" in picked.stdout and "not shown" not in picked.stdout
    equals = run(served, "datasets", "aggregate", "people", "--fn", "count", "--where", "city=Oulu")
    assert equals.returncode == 2 and "COLUMN:VALUE" in equals.stderr, equals.stderr
    no_key = run(
        {"SUBMITTER_URL": served["SUBMITTER_URL"], "SUBMITTER_HOME": "/nonexistent"}, "workers"
    )
    assert no_key.returncode == 1 and "SUBMITTER_API_KEY" in no_key.stderr, no_key.stderr

    described = run(
        served, "jobs", "submit", "describe", "--spec", '{"dataset": "people"}', "--wait", "--json"
    )
    assert described.returncode == 0, described.stderr
    job_id = json.loads(described.stdout)["id"]
    assert "summary.json" in run(served, "jobs", "artifacts", job_id).stdout
    downloaded = run(served, "jobs", "download", job_id, "-o", str(tmp_path / "out"))
    assert downloaded.returncode == 0, downloaded.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["columns"]["age"]["max"] == 45

    assert run(served, "datasets", "delete", "people").returncode == 0
    gone = run(served, "datasets", "show", "people")
    assert gone.returncode == 1 and "404" in gone.stderr


def test_models_commands(served: dict[str, str], tmp_path: Path) -> None:
    rows = ["x,y,label"] + [
        f"{i % 7},{(i * 3) % 5},{'a' if i % 7 > 3 else 'b'}" for i in range(120)
    ]
    csv = tmp_path / "toy.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert run(served, "datasets", "upload", str(csv), "--name", "toy").returncode == 0
    spec = json.dumps(
        {"dataset": "toy", "target": "label", "model_name": "toy", "models": ["lr"], "folds": 2}
    )
    for _ in range(2):
        trained = run(served, "jobs", "submit", "train", "--spec", spec, "--wait", timeout=180)
        assert trained.returncode == 0, trained.stdout + trained.stderr
    # For people: the leaderboard, what was registered, where the files are; not raw JSON.
    assert "leaderboard (AUC" in trained.stdout and "registered toy v2" in trained.stdout
    assert "artifacts: submitter jobs artifacts" in trained.stdout
    assert len(trained.stdout.splitlines()) < 40, trained.stdout
    predicted = run(
        served, "models", "predict", "toy", "--rows", '[{"x": 5, "y": 1}, {"x": 1, "y": 2}]'
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "toy v2" in predicted.stdout and "p(a)" in predicted.stdout
    (tmp_path / "rows.csv").write_text("x,y\n6,0\n0,4\n")
    as_json = run(
        served,
        "models",
        "predict",
        "toy",
        "--csv",
        str(tmp_path / "rows.csv"),
        "--version",
        "1",
        "--json",
    )
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["version"] == 1 and len(answer["predictions"]) == 2
    neither = run(served, "models", "predict", "toy")
    assert neither.returncode == 2 and "--rows" in neither.stderr
    listed = run(served, "models", "list")
    assert "toy" in listed.stdout
    shown = run(served, "models", "show", "toy", "--json")
    assert [v["version"] for v in json.loads(shown.stdout)] == [2, 1]
    promoted = run(served, "models", "promote", "toy", "1")
    assert promoted.returncode == 0 and "production → v1" in promoted.stdout
    aliases = json.loads(run(served, "models", "list", "--json").stdout)[0]["aliases"]
    assert aliases == {"production": 1}
    missing = run(served, "models", "promote", "toy", "7")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_workers_command_lists_the_running_worker(served: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        listed = run(served, "workers", "--json")
        assert listed.returncode == 0, listed.stderr
        workers = json.loads(listed.stdout)
        if workers:
            break
        assert time.monotonic() < deadline, "the worker never reported itself"
        time.sleep(0.3)
    assert [w["state"] for w in workers] == ["online"]
    assert workers[0]["concurrency"] == 1
    table = run(served, "workers")
    assert workers[0]["name"] in table.stdout and "online" in table.stdout


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["datasets", "list"], ["models", "list"], ["workers"]],
)
def test_no_api_running_is_one_line_naming_the_url_and_the_fix(command: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result = run({"SUBMITTER_URL": url, "SUBMITTER_API_KEY": "sk_x"}, *command)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert url in lines[0] and "submitter up" in lines[0] and "SUBMITTER_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_client_raises_its_own_errors() -> None:
    from submitter import ApiUnreachable, Client, SubmitterError

    url = f"http://127.0.0.1:{_free_port()}"
    with Client(url, api_key="sk_x", timeout=2) as client:
        with pytest.raises(ApiUnreachable) as caught:
            client.jobs()
        assert isinstance(caught.value, SubmitterError) and caught.value.url == url
        assert client.ready() is False


def test_help_does_not_import_the_database_or_ml_stack() -> None:
    """`--help` and client commands start without SQLAlchemy, Alembic, pandas or httpx."""
    code = (
        "import sys; from submitter.cli import app; "
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'pandas', 'sklearn', 'httpx', "
        "'pydantic_settings', 'markdown_it') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_an_error_about_the_whole_request_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    from submitter.cli.jobs import fail
    from submitter.client import ApiError

    fail(ApiError(422, [{"loc": ["body"], "msg": "give exactly one of `cron` and `every`"}]))
    assert capsys.readouterr().err.startswith("request: give exactly one of")
