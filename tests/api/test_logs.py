"""`GET /api/v1/logs/{service}` on each backend: the records of real handlers (this test
process's, and a real `submitter worker`'s, its forked pool children included), their
filters and order, admin only, and a clear 422 for a bad service, level or time."""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from submitter.servicelogs.handler import ServiceLogHandler
from tests.conftest import Process, Stack, eventually


def _get(stack: Stack, path: str, role: str = "admin", **params: Any) -> Any:
    response = stack.api.get(f"/api/v1/logs/{path}", params=params, headers=stack.headers(role))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def written(stack: Stack) -> Iterator[dict[str, Any]]:
    """Records of an `api` and a `beat` handler on a host of this test's own."""
    host = f"test-{uuid.uuid4().hex[:8]}"
    job_id = uuid.uuid4().hex
    url = stack.backend.settings.db_url
    handlers = {name: ServiceLogHandler(name, url, host=host) for name in ("api", "beat")}
    loggers = {}
    for name, handler in handlers.items():
        loggers[name] = logging.getLogger(f"tests.logs.{name}.{host}")
        loggers[name].propagate = False
        loggers[name].setLevel(logging.DEBUG)
        loggers[name].addHandler(handler)
    try:
        loggers["api"].info("api one")
        loggers["api"].warning("api two", extra={"job_id": job_id})
        loggers["api"].error("api three")
        loggers["beat"].info("beat one", extra={"job_id": job_id})
        loggers["beat"].critical("beat two")
        loggers["api"].debug("below INFO: not kept")
        for handler in handlers.values():
            assert handler.wait_written(20)
        yield {"host": host, "job_id": job_id}
    finally:
        for handler in handlers.values():
            handler.close()


def _messages(page: dict[str, Any]) -> list[str]:
    return [item["message"] for item in page["items"]]


def test_records_newest_first_with_their_fields(stack: Stack, written: dict[str, Any]) -> None:
    page = _get(stack, "api", host=written["host"])
    assert page["total"] == 3
    assert _messages(page) == ["api three", "api two", "api one"]
    three, two, _ = page["items"]
    assert three["level"] == "ERROR" and two["level"] == "WARNING"
    assert two["job_id"] == written["job_id"] and three["job_id"] is None
    assert {i["service"] for i in page["items"]} == {"api"}
    assert {i["host"] for i in page["items"]} == {written["host"]}
    assert three["logger"] == f"tests.logs.api.{written['host']}"
    assert three["id"] > two["id"]
    assert isinstance(three["pid"], int)
    assert datetime.fromisoformat(three["time"]).tzinfo is not None


def test_filters(stack: Stack, written: dict[str, Any]) -> None:
    host, job_id = written["host"], written["job_id"]
    everything = _get(stack, "all", host=host)
    assert _messages(everything) == ["beat two", "beat one", "api three", "api two", "api one"]
    assert _messages(_get(stack, "beat", host=host)) == ["beat two", "beat one"]
    assert _messages(_get(stack, "all", host=host, level="ERROR")) == ["beat two", "api three"]
    assert _get(stack, "all", host=host, level="DEBUG")["total"] == 5
    assert _messages(_get(stack, "all", job_id=job_id)) == ["beat one", "api two"]
    assert _get(stack, "worker", host=host)["total"] == 0
    assert _get(stack, "all", host="no-such-host")["total"] == 0
    # Paging: total counts every match, whatever the page.
    page = _get(stack, "all", host=host, limit=2, offset=1)
    assert _messages(page) == ["beat one", "api three"] and page["total"] == 5
    # Following: oldest first after the last id seen.
    first_id = everything["items"][-1]["id"]
    after = _get(stack, "all", host=host, order="oldest", after_id=first_id)
    assert _messages(after) == ["api two", "api three", "beat one", "beat two"]
    last_id = everything["items"][0]["id"]
    assert _get(stack, "all", host=host, order="oldest", after_id=last_id)["items"] == []
    # Time: a naive time is UTC; `until` is exclusive.
    now = datetime.now(UTC)
    assert (
        _get(stack, "all", host=host, since=(now - timedelta(minutes=5)).isoformat())["total"] == 5
    )
    assert (
        _get(stack, "all", host=host, since=(now + timedelta(minutes=5)).isoformat())["total"] == 0
    )
    past = (now - timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    assert _get(stack, "all", host=host, until=past)["total"] == 0
    newest = datetime.fromisoformat(everything["items"][0]["time"])
    assert _get(stack, "all", host=host, until=newest.isoformat())["total"] == 4


def test_admin_only(stack: Stack) -> None:
    for role in ("user", "viewer"):
        response = stack.api.get("/api/v1/logs/all", headers=stack.headers(role))
        assert response.status_code == 403, response.text
        assert "needs admin" in response.json()["detail"]
    assert stack.api.get("/api/v1/logs/all").status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("nope", {}, ["path", "service"]),
        ("all", {"level": "LOUD"}, ["query", "level"]),
        ("all", {"order": "sideways"}, ["query", "order"]),
        ("all", {"since": "yesterday"}, ["query", "since"]),
        ("all", {"until": "0001-01-01T00:00:00+01:00"}, ["query", "until"]),
        ("all", {"after_id": -1}, ["query", "after_id"]),
        ("all", {"after_id": 2**63}, ["query", "after_id"]),
        ("all", {"limit": 0}, ["query", "limit"]),
        ("all", {"host": "h" * 256}, ["query", "host"]),
        ("all", {"job_id": "j" * 65}, ["query", "job_id"]),
    ],
)
def test_bad_inputs_are_422_naming_the_field(
    stack: Stack, path: str, params: dict[str, Any], loc: list[str]
) -> None:
    response = stack.api.get(f"/api/v1/logs/{path}", params=params, headers=stack.headers("admin"))
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [loc]


def test_a_real_worker_and_its_pool_children_write_records(stack: Stack) -> None:
    """The stack's `submitter worker` (prefork pool): its main process's records, and the
    record a forked pool child logs while it runs a job, with that job's id."""
    worker_pid = stack.processes[0].pid
    assert stack.processes[0].name == "worker"
    job = stack.submit(spec={"message": "logged", "fail": True})
    assert stack.wait(job["id"])["state"] == "failed"

    def job_records() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _get(stack, "worker", job_id=job["id"])["items"]
        return items

    records = eventually(job_records, timeout=30)
    failed = [r for r in records if f"job {job['id']} failed" in r["message"]]
    assert failed, records
    assert failed[0]["service"] == "worker"
    assert failed[0]["level"] == "WARNING"
    assert failed[0]["logger"] == "submitter.worker.runner"
    assert failed[0]["host"] == socket.gethostname()
    assert failed[0]["pid"] != worker_pid  # a forked pool child ran the job
    # The main process writes its own records too (Celery's start-up, at least).
    main = _get(stack, "worker", host=socket.gethostname(), limit=1000, order="oldest")
    assert any(r["pid"] == worker_pid for r in main["items"]), main["items"][:5]
    # ...and so does beat, a service of its own.
    beat = eventually(lambda: _get(stack, "beat", host=socket.gethostname())["total"], timeout=30)
    assert beat


def test_a_real_api_writes_its_records_up_to_its_shutdown(stack: Stack) -> None:
    """Uvicorn re-raises the SIGTERM it handled once it has shut down: the records of
    the shutdown are still written before the signal ends the process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = Process(stack.backend, "api", f"--port={port}")

    def messages() -> list[str]:
        page = _get(stack, "api", host=socket.gethostname(), limit=1000)
        return [r["message"] for r in page["items"] if r["pid"] == api.pid]

    try:
        eventually(lambda: any("Uvicorn running" in m for m in messages()), timeout=90)
        _the_cli_reads_and_follows(stack, f"http://127.0.0.1:{port}", api.pid)
        api.popen.send_signal(signal.SIGTERM)
        assert api.popen.wait(30) == -signal.SIGTERM  # it still ends as SIGTERM ends it
    finally:
        api.stop()
    assert f"Finished server process [{api.pid}]" in messages(), api.tail()


def _the_cli_reads_and_follows(stack: Stack, url: str, api_pid: int) -> None:
    """`submitter logs` over HTTP: the newest records, then (`--follow`) the ones a job
    makes after it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env.update(SUBMITTER_URL=url, SUBMITTER_API_KEY=stack.backend.admin_key)
    command = [sys.executable, "-m", "submitter", "logs"]
    shown = subprocess.run(
        [*command, "api", "--host", socket.gethostname(), "--level", "info", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert any(r["pid"] == api_pid and "Uvicorn running" in r["message"] for r in lines)
    assert [r["id"] for r in lines] == sorted(r["id"] for r in lines)  # oldest first
    refused = subprocess.run(
        [*command, "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "service" in refused.stderr

    job_id = uuid.uuid4().hex  # a job of this test's own, logged by this test's handler
    follower = subprocess.Popen(
        [*command, "all", "--job", job_id, "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    handler = ServiceLogHandler("beat", stack.backend.settings.db_url)
    log = logging.getLogger(f"tests.logs.follow.{job_id}")
    log.propagate = False
    log.addHandler(handler)
    try:
        time.sleep(2)  # the follower has read the (empty) start
        log.warning("followed", extra={"job_id": job_id})
        assert handler.wait_written(20)
        assert follower.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=30), "the follower printed nothing"
        record = json.loads(follower.stdout.readline())
        assert (record["message"], record["job_id"]) == ("followed", job_id)
    finally:
        handler.close()
        follower.send_signal(signal.SIGINT)
        follower.wait(20)
