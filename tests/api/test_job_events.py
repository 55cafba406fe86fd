"""`GET /api/v1/jobs/{id}/events`: a job followed live as Server-Sent Events, on each
backend with a real worker: state changes, progress, log lines in order, the end; resumed
with Last-Event-ID; bounded in time; ended cleanly by a database outage; over a real
Uvicorn through the app's middleware, and with the Python client.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from submitter.api.app import create_app
from submitter.client import Client, JobHandle, parse_sse
from submitter.config import Settings, load_settings
from submitter.db.migrate import upgrade
from submitter.jobs.events import PING, JobEvent, format_sse, job_events
from tests.conftest import Stack
from tests.services import restartable_postgres

ORDER = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
EVENTS_ROUTE = "/api/v1/jobs/{job_id}/events"


def sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """A minimal reader of `text/event-stream` lines, independent of the client's: each
    event's fields as written (`event`, `id`, `retry`, `data` parsed), and `: ping`
    comments as `{"comment": ...}`."""
    fields: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            assert name not in fields, f"field {name} twice in one event"
            fields[name] = json.loads(value) if name == "data" else value


def stream(
    api: TestClient | httpx.Client,
    job_id: str,
    headers: dict[str, str],
    *,
    until: str = "end",
    **params: Any,
) -> tuple[list[dict[str, Any]], httpx.Response]:
    """The events of one connection, up to and including the first `until` event (or the
    end of the stream). Pings (sent when a busy queue keeps the job waiting) are left out."""
    events: list[dict[str, Any]] = []
    url = EVENTS_ROUTE.format(job_id=job_id)
    with api.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200, response.read()
        for event in sse(response.iter_lines()):
            if "comment" in event:
                continue
            events.append(event)
            if event.get("event") == until:
                break
    return events, response


def logs_of(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    response = stack.api.get(f"/api/v1/jobs/{job_id}/logs", headers=stack.headers("admin"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_the_stream_follows_a_job_from_queued_to_its_end(stack: Stack) -> None:
    job = stack.submit(spec={"message": "live", "sleep_seconds": 4})
    events, response = stream(stack.api, job["id"], stack.headers("viewer"))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"

    first, last = events[0], events[-1]
    assert first["event"] == "state" and first["data"]["id"] == job["id"]
    assert first["data"]["state"] in ("queued", "running"), "not live: the job had ended"
    assert first["retry"] == "3000"
    assert last["event"] == "end"
    assert last["data"]["state"] == "succeeded"
    assert last["data"]["result"] == {"message": "live", "sleep_seconds": 4.0, "fail": False}
    assert last["data"] == stack.job(job["id"])  # the same JobOut as GET /jobs/{id}
    assert {e["event"] for e in events} <= {"state", "log", "end"}

    states = [e["data"] for e in events if e["event"] in ("state", "end")]
    assert "running" in [s["state"] for s in states]
    ranks = [ORDER[s["state"]] for s in states]
    assert ranks == sorted(ranks), ranks
    progress = [s["progress"] for s in states if s["progress"] is not None]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(0 < p < 1 for p in progress), f"no progress seen between 0 and 1: {progress}"
    assert all(a != b for a, b in pairwise(states)), "a state repeated"

    lines = [e["data"] for e in events if e["event"] == "log"]
    assert lines == logs_of(stack, job["id"])  # every line, once, in order, same shape
    messages = [line["message"] for line in lines]
    assert messages[0].startswith("started on ") and messages[-1] == "finished: succeeded"
    assert "echo: live" in messages
    cursor = 0  # each event's id is the last log line's id sent so far
    for event in events:
        if event["event"] == "log":
            cursor = event["data"]["id"]
        assert event["id"] == str(cursor), event


def test_a_reconnect_with_last_event_id_repeats_no_line_and_misses_none(stack: Stack) -> None:
    job = stack.submit(spec={"message": "resume", "sleep_seconds": 2})
    headers = stack.headers("viewer")
    before, _ = stream(stack.api, job["id"], headers, until="log")  # then the client leaves
    assert before[-1]["event"] == "log"
    resume_at = before[-1]["id"]
    after, _ = stream(stack.api, job["id"], {**headers, "Last-Event-ID": resume_at})
    assert after[0]["event"] == "state"  # the current state again, first
    assert after[-1]["event"] == "end"
    seen = [e["data"]["id"] for e in before + after if e["event"] == "log"]
    assert seen == [line["id"] for line in logs_of(stack, job["id"])]
    assert len(seen) == len(set(seen)) and seen[0] <= int(resume_at) < seen[1]

    # A finished job: its state, then the lines after the cursor, then its end. The header
    # wins over a stale `?after=` (a browser reconnects to the same URL).
    last_id = str(seen[-1])
    none_left, _ = stream(stack.api, job["id"], {**headers, "Last-Event-ID": last_id}, after=0)
    assert [e["event"] for e in none_left] == ["state", "end"]
    assert none_left[0]["data"]["state"] == "succeeded"
    assert none_left[0]["id"] == none_left[1]["id"] == last_id
    from_query, _ = stream(stack.api, job["id"], headers, after=seen[-2])
    assert [e["event"] for e in from_query] == ["state", "log", "end"]
    assert from_query[1]["data"]["id"] == seen[-1]


def test_unknown_jobs_keys_and_bad_cursors_are_answered_before_the_stream(stack: Stack) -> None:
    job = stack.submit(spec={"message": "quick"})
    stack.wait(job["id"])
    url = EVENTS_ROUTE.format(job_id=job["id"])
    viewer = stack.headers("viewer")
    for unknown in ("0" * 32, "f" * 12):
        missing = stack.api.get(EVENTS_ROUTE.format(job_id=unknown), headers=viewer)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json()["detail"] == f"job {unknown} not found"
    assert stack.api.get(url).status_code == 401
    bad_key = stack.api.get(url, headers={"Authorization": "Bearer sk_nope"})
    assert bad_key.status_code == 401
    for bad in ("x", "-1", str(2**63)):
        refused = stack.api.get(url, headers={**viewer, "Last-Event-ID": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["header", "last-event-id"]
    assert stack.api.get(url, params={"after": -1}, headers=viewer).status_code == 422
    # A prefix of the id does, as everywhere.
    events, _ = stream(stack.api, job["id"][:10], viewer)
    assert events[-1]["event"] == "end" and events[-1]["data"]["id"] == job["id"]


@contextmanager
def uvicorn_serving(settings: Settings) -> Iterator[str]:
    """The real app under a real Uvicorn (in a thread), as `submitter api` runs it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _requests_counted(http: httpx.Client) -> float:
    """How many requests to the events route the API has finished (its /metrics)."""
    text = http.get("/metrics").text
    pattern = (
        r'submitter_http_requests_total\{[^}]*route="/api/v1/jobs/\{job_id\}/events"[^}]*\} (\S+)'
    )
    return sum(float(value) for value in re.findall(pattern, text))


def test_events_arrive_live_over_http_and_a_client_that_leaves_ends_the_stream(
    stack: Stack,
) -> None:
    job = stack.submit(spec={"message": "long", "sleep_seconds": 30})
    try:
        stack.wait(job["id"], lambda j: j["state"] == "running")
        with (
            uvicorn_serving(stack.backend.settings) as url,
            httpx.Client(base_url=url, headers=stack.headers("viewer"), timeout=10) as http,
        ):
            counted = _requests_counted(http)
            events, _ = stream(http, job["id"], {}, until="state")
            # The first event came while the job runs: nothing between the route and the
            # socket (MetricsMiddleware, BodyLimit) holds the stream back.
            assert events[0]["data"]["state"] == "running"
            assert stack.job(job["id"])["state"] == "running"
            # The client left; the server notices, stops the generator and ends the request.
            deadline = time.monotonic() + 10
            while _requests_counted(http) < counted + 1:
                assert time.monotonic() < deadline, "the stream went on after the client left"
                time.sleep(0.1)
    finally:
        stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("user"))


def test_a_stream_lives_at_most_its_bound_with_pings_meanwhile_then_asks_to_reconnect(
    stack: Stack,
) -> None:
    blocker = stack.submit(spec={"message": "blocker", "sleep_seconds": 30})
    waiting = stack.submit(spec={"message": "waits"}, depends_on=[blocker["id"]])
    try:

        async def follow() -> list[JobEvent]:
            return [
                event
                async for event in job_events(
                    stack.runtime, waiting["id"], poll=0.1, heartbeat=0.3, max_seconds=1.5
                )
            ]

        started = time.monotonic()
        events = anyio.run(follow)
        assert 1.4 < time.monotonic() - started < 10  # its bound, plus a busy machine
        assert events[0].event == "state" and events[0].data is not None
        assert events[0].data["phase"] == "waiting"
        assert PING in events
        assert events[-1].event == "reconnect" and events[-1].id == 0
        assert events[-1].data is not None
        assert "SUBMITTER_EVENTS_MAX_SECONDS" in events[-1].data["detail"]
        assert events[-1].retry_ms == 1000

        # The route takes its bound from the settings.
        settings = stack.backend.settings.model_copy(update={"events_max_seconds": 1.0})
        with TestClient(create_app(settings)) as api:
            routed, _ = stream(api, waiting["id"], stack.headers("viewer"), until="reconnect")
        assert [e["event"] for e in routed] == ["state", "reconnect"]
    finally:
        stack.api.post(f"/api/v1/jobs/{blocker['id']}/cancel", headers=stack.headers("user"))


def test_the_client_follows_and_resumes_the_stream(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Streams of at most 1 s: following a 3 s job takes several reconnects.
    settings = stack.backend.settings.model_copy(update={"events_max_seconds": 1.0})
    with uvicorn_serving(settings) as url, Client(url, api_key=stack.keys["viewer"]) as client:
        job = stack.submit(spec={"message": "client", "sleep_seconds": 3})
        events = list(client.events(job["id"]))
        assert events[0]["event"] == "state" and events[-1]["event"] == "end"
        assert events[-1]["data"]["state"] == "succeeded"
        lines = [e["data"] for e in events if e["event"] == "log"]
        assert lines == logs_of(stack, job["id"])  # once each, in order, across reconnects
        # Each connection starts with the current state: more than one is a reconnect (how
        # many depends on how busy the machine is).
        states = [e["data"]["state"] for e in events if e["event"] == "state"]
        assert len(states) >= 2, [(e["event"], e["id"]) for e in events]

        # wait(): the job at each change, every line, the finished job.
        second = stack.submit(spec={"message": "waited", "sleep_seconds": 1})
        updates: list[dict[str, Any]] = []
        logged: list[dict[str, Any]] = []
        done = client.wait(second["id"], on_update=updates.append, on_log=logged.append)
        assert done["state"] == "succeeded" and updates[-1] == done
        assert logged == logs_of(stack, second["id"])
        after = client.events(second["id"], after_log=logged[-2]["id"])
        assert [e["event"] for e in after] == ["state", "log", "end"]

        third = stack.submit(spec={"message": "in a notebook"})
        assert JobHandle(client, third["id"]).wait(logs=True)["state"] == "succeeded"
        assert "echo: in a notebook" in capsys.readouterr().out

        with pytest.raises(TimeoutError, match="still"):
            slow = stack.submit(spec={"message": "slow", "sleep_seconds": 30})
            try:
                client.wait(slow["id"], timeout=1.5)
            finally:
                stack.api.post(f"/api/v1/jobs/{slow['id']}/cancel", headers=stack.headers("user"))


def test_a_database_outage_mid_stream_ends_it_with_an_error_event(tmp_path: Path) -> None:
    with restartable_postgres() as server:
        settings = load_settings(
            home=str(tmp_path),
            database_url=server.create_database(),
            admin_key="sk_test_admin_" + "x" * 20,
            log_format="json",
        )
        upgrade(settings)
        admin = {"Authorization": "Bearer sk_test_admin_" + "x" * 20}
        with TestClient(create_app(settings)) as api:
            body = {"kind": "echo", "spec": {"message": "x"}}
            job = api.post("/api/v1/jobs", json=body, headers=admin).json()
            url = EVENTS_ROUTE.format(job_id=job["id"])
            started = time.monotonic()
            with api.stream("GET", url, headers=admin) as response:
                assert response.status_code == 200
                events = sse(response.iter_lines())
                assert next(events)["event"] == "state"
                server.stop()
                rest = list(events)  # the stream ends by itself
            assert time.monotonic() - started < 30
            assert [e["event"] for e in rest] == ["error"], rest
            detail = rest[0]["data"]["detail"]
            assert detail.startswith("database unavailable (PostgreSQL database ")
            assert detail.endswith("reconnect in 5 s") and rest[0]["retry"] == "5000"
            # And before a stream starts, the outage is the 503 of every route.
            refused = api.get(url, headers=admin)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"


def test_the_wire_format_is_one_json_line_per_event_and_the_client_reads_it_back() -> None:
    message = "Traceback\n  line 1\r\nä \ud800 \u2028 end"
    line = {"id": 7, "at": "2026-01-01T00:00:00Z", "level": "ERROR", "message": message}
    event = JobEvent("log", line, 7)
    wire = format_sse(event)
    assert wire.endswith(b"\n\n") and wire.count(b"\n") == 4  # event, id, data, blank
    assert wire.decode("ascii").splitlines()[:2] == ["event: log", "id: 7"]
    assert format_sse(PING) == b": ping\n\n"
    text = (format_sse(JobEvent("state", {"a": 1}, 0, 3000)) + format_sse(PING) + wire).decode()
    parsed = list(parse_sse(text.splitlines()))
    assert [(p["event"], p["id"], p["retry"]) for p in parsed] == [
        ("state", "0", 3000),
        ("log", "7", None),
    ]
    assert json.loads(parsed[1]["data"]) == line


def test_many_watchers_of_one_job_each_get_every_line_once(stack: Stack) -> None:
    """Twenty streams in one process share a few poll threads (jobs.events.POLL_THREADS);
    each still sees the whole job."""
    job = stack.submit(spec={"message": "crowd", "sleep_seconds": 2})
    seen: list[list[int]] = []

    async def watch() -> None:
        lines = [
            event.data["id"]
            async for event in job_events(stack.runtime, job["id"], poll=0.1)
            if event.event == "log" and event.data is not None
        ]
        seen.append(lines)

    async def crowd() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(watch)

    anyio.run(crowd)
    expected = [line["id"] for line in logs_of(stack, job["id"])]
    assert len(seen) == 20 and all(lines == expected for lines in seen), seen
