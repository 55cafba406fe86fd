"""The console's operations pages over plain HTTP (in-process app, embedded backend, no
worker or beat): schedules, workers, beat tasks, clusters and service logs. What each shows
to each role, that a viewer has no buttons and a forged POST is 403, that the forms answer
as the API does, and that no input is a 500."""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from submitter.db.models import BeatTask, ServiceLog, Worker
from submitter.db.types import utcnow
from submitter.ui.deps import csrf_token
from tests.conftest import Stack, make_backend, make_stack
from tests.ui.conftest import sign_in

ERROR = re.compile(r'id="error-message">([^<]*)<')
SCHEDULE_ERROR = re.compile(r'id="schedule-error">([^<]*)<')
#: Every page of this module, for the checks that apply to them all.
VIEWER_PAGES = (
    "/ui/schedules",
    "/ui/workers",
    "/ui/workers/table",
    "/ui/tasks",
    "/ui/tasks/table",
    "/ui/clusters",
)


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real app (no worker, no beat) with two clusters: `closed` (SSH to a closed port
    on 127.0.0.1, so its check fails at once) and `here` (local transport)."""
    home = tmp_path_factory.mktemp("ops")
    key_file = home / "id_test"
    key_file.write_text("not a key: the connection is refused before it is read\n")
    known_hosts = home / "known_hosts"
    known_hosts.write_text("")
    clusters = [
        {
            "name": "closed",
            "host": "127.0.0.1",
            "port": _closed_port(),
            "user": "nobody",
            "key_file": str(key_file),
            "known_hosts": str(known_hosts),
            "workdir": "/tmp/submitter-closed",
            "connect_timeout": 5,
        },
        {"name": "here", "transport": "local", "workdir": str(home / "cluster")},
    ]
    with make_backend("embedded", home) as backend:
        backend.env["SUBMITTER_CLUSTERS"] = json.dumps(clusters)
        with make_stack(backend, worker=False, beat=False) as stack:
            yield stack


@pytest.fixture(scope="module")
def admin(ops: Stack) -> TestClient:
    return sign_in(ops, "admin")


@pytest.fixture(scope="module")
def user(ops: Stack) -> TestClient:
    return sign_in(ops, "user")


@pytest.fixture(scope="module")
def viewer(ops: Stack) -> TestClient:
    return sign_in(ops, "viewer")


def token(stack: Stack, role: str) -> str:
    return csrf_token(stack.keys[role])


def error_of(text: str) -> str:
    found = ERROR.search(text)
    assert found, text[:500]
    return html.unescape(found.group(1))


def schedule_error(text: str) -> str:
    found = SCHEDULE_ERROR.search(text)
    assert found, text[:3000]
    return html.unescape(found.group(1))


def create_schedule(client: TestClient, stack: Stack, **fields: str) -> str:
    """Create a schedule through the form (as `user`); return its id."""
    data = {"kind": "echo", "spec": '{"message": "tick"}', "enabled": "true", **fields}
    response = client.post(
        "/ui/schedules",
        data={**data, "csrf_token": token(stack, "user")},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:2000]
    location = response.headers["location"]
    assert re.fullmatch(r"/ui/schedules/[0-9a-f]{32}", location), location
    return location.rsplit("/", 1)[-1]


def api_schedule(stack: Stack, ref: str) -> dict[str, object]:
    response = stack.api.get(f"/api/v1/schedules/{ref}", headers=stack.headers("admin"))
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


# ---- every role, every page --------------------------------------------------------------


def test_every_page_renders_for_a_viewer_without_buttons(ops: Stack, viewer: TestClient) -> None:
    create_schedule(sign_in(ops, "user"), ops, name="viewer-sees-it", interval_seconds="3600")
    for path in VIEWER_PAGES:
        response = viewer.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html"), path
        text = response.text
        for button in ("schedule-form", "Run now", "Pause", "Resume", "check-button"):
            assert button not in text, (path, button)
    listing = viewer.get("/ui/schedules").text
    assert "viewer-sees-it" in listing and "every 1 h" in listing
    clusters = viewer.get("/ui/clusters").text
    assert 'data-cluster="closed"' in clusters and 'data-cluster="here"' in clusters
    # the nav: the operations pages, not the admin's logs
    assert 'href="/ui/workers"' in listing and 'href="/ui/tasks"' in listing
    assert 'href="/ui/logs"' not in listing
    assert 'href="/ui/logs"' in sign_in(ops, "admin").get("/ui/schedules").text


def test_a_viewer_s_forged_posts_are_403(ops: Stack, viewer: TestClient) -> None:
    schedule_id = create_schedule(
        sign_in(ops, "user"), ops, name="not-for-viewers", interval_seconds="60"
    )
    forged = {"csrf_token": token(ops, "viewer")}  # a valid token of the viewer's session
    for path, data in (
        ("/ui/schedules", {"name": "forged", "kind": "echo", "interval_seconds": "60"}),
        (f"/ui/schedules/{schedule_id}/pause", {}),
        (f"/ui/schedules/{schedule_id}/resume", {}),
        (f"/ui/schedules/{schedule_id}/run", {}),
        (f"/ui/schedules/{schedule_id}/delete", {}),
    ):
        response = viewer.post(path, data={**data, **forged}, follow_redirects=False)
        assert response.status_code == 403, path
        assert "needs user or higher" in error_of(response.text), path
    for path in ("/ui/clusters/closed/check", "/ui/clusters/here/check"):
        response = viewer.post(path, data=forged, follow_redirects=False)
        assert response.status_code == 403 and "needs admin" in error_of(response.text), path
    assert viewer.get(f"/ui/schedules/{schedule_id}/delete").status_code == 403
    schedule = api_schedule(ops, schedule_id)
    assert schedule["enabled"] is True and schedule["runs"] == 0
    names = [
        s["name"]
        for s in ops.api.get("/api/v1/schedules", headers=ops.headers("admin")).json()["items"]
    ]
    assert "forged" not in names


def test_posts_without_the_csrf_token_are_403(ops: Stack, user: TestClient) -> None:
    schedule_id = create_schedule(user, ops, name="csrf-checked", interval_seconds="60")
    for path in (f"/ui/schedules/{schedule_id}/pause", f"/ui/schedules/{schedule_id}/run"):
        response = user.post(path, data={"csrf_token": "0" * 64}, follow_redirects=False)
        assert response.status_code == 403 and "CSRF" in response.text, path
    assert api_schedule(ops, schedule_id)["enabled"] is True


# ---- schedules ---------------------------------------------------------------------------


def test_create_pause_resume_run_and_delete(ops: Stack, user: TestClient) -> None:
    schedule_id = create_schedule(
        user, ops, name="nightly-echo", cron="0 3 * * *", timezone="Europe/Helsinki"
    )
    made = api_schedule(ops, "nightly-echo")
    assert made["id"] == schedule_id and made["cron"] == "0 3 * * *" and made["enabled"]
    assert made["timezone"] == "Europe/Helsinki" and made["next_run_at"]
    detail = user.get(f"/ui/schedules/{schedule_id}")
    assert detail.status_code == 200
    assert "0 3 * * *" in detail.text and "Europe/Helsinki" in detail.text
    assert "tick" in detail.text  # the spec
    assert 'data-action="pause"' in detail.text and 'id="delete-link"' in detail.text
    listing = user.get("/ui/schedules").text
    assert f'href="/ui/schedules/{schedule_id}"' in listing and "state-enabled" in listing

    paused = user.post(
        f"/ui/schedules/{schedule_id}/pause",
        data={"csrf_token": token(ops, "user"), "back": "/ui/schedules"},
        follow_redirects=False,
    )
    assert paused.status_code == 303 and paused.headers["location"] == "/ui/schedules"
    assert api_schedule(ops, schedule_id)["enabled"] is False
    assert api_schedule(ops, schedule_id)["next_run_at"] is None
    row = re.search(
        r'<tr data-schedule="nightly-echo".*?</tr>', user.get("/ui/schedules").text, re.S
    )
    assert row and "state-paused" in row.group(0) and 'data-action="resume"' in row.group(0)

    # `back` only ever returns to a page of this section
    resumed = user.post(
        f"/ui/schedules/{schedule_id}/resume",
        data={"csrf_token": token(ops, "user"), "back": "https://evil.example/"},
        follow_redirects=False,
    )
    assert resumed.headers["location"] == f"/ui/schedules/{schedule_id}"
    assert api_schedule(ops, schedule_id)["enabled"] is True

    ran = user.post(
        f"/ui/schedules/{schedule_id}/run",
        data={"csrf_token": token(ops, "user")},
        follow_redirects=False,
    )
    assert ran.status_code == 303
    job_id = ran.headers["location"].rsplit("/", 1)[-1]
    assert re.fullmatch(r"/ui/jobs/[0-9a-f]{32}", ran.headers["location"])
    job = ops.job(job_id)
    assert job["schedule_id"] == schedule_id and job["spec"]["message"] == "tick"
    after = api_schedule(ops, schedule_id)
    assert after["runs"] == 1 and after["last_job_id"] == job_id
    listing = user.get("/ui/schedules").text
    assert f'href="/ui/jobs/{job_id}"' in listing  # the last job, linked
    detail = user.get(f"/ui/schedules/{schedule_id}").text
    assert f'href="/ui/jobs/{job_id}"' in detail and 'id="schedule-jobs"' in detail

    confirm = user.get(f"/ui/schedules/{schedule_id}/delete")
    assert confirm.status_code == 200 and 'id="delete-confirm"' in confirm.text
    assert api_schedule(ops, schedule_id)["name"] == "nightly-echo"  # a GET deletes nothing
    deleted = user.post(
        f"/ui/schedules/{schedule_id}/delete",
        data={"csrf_token": token(ops, "user")},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    shown = user.get(deleted.headers["location"])
    assert "nightly-echo" in shown.text and 'id="deleted-notice"' in shown.text
    gone = ops.api.get(f"/api/v1/schedules/{schedule_id}", headers=ops.headers("admin"))
    assert gone.status_code == 404
    assert ops.job(job_id)["schedule_id"] == schedule_id  # its jobs stay
    again = user.post(f"/ui/schedules/{schedule_id}/run", data={"csrf_token": token(ops, "user")})
    assert again.status_code == 404 and "not found" in error_of(again.text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "not a cron"}, "need 5 fields"),
        ({"cron": "61 * * * *"}, "is not a valid cron expression"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "* * * * * *"}, "need 5 fields"),
        ({"cron": "0 3 * * *", "interval_seconds": "60"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"interval_seconds": "0.5"}, "greater than or equal to 1"),
        ({"interval_seconds": "soon"}, "interval_seconds"),
        ({"interval_seconds": "nan"}, "interval_seconds: Input should be a finite number"),
        ({"interval_seconds": "-inf"}, "interval_seconds: Input should be a finite number"),
        ({"interval_seconds": "1e400"}, "interval_seconds: Input should be a finite number"),
        ({"cron": "@daily", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"interval_seconds": "60", "name": "a b"}, "name:"),
        ({"interval_seconds": "60", "name": ""}, "name:"),
        ({"interval_seconds": "60", "spec": "{not json"}, "spec: not JSON"),
        ({"interval_seconds": "60", "spec": "[1]"}, "spec: must be a JSON object"),
        ({"interval_seconds": "60", "spec": "{}"}, "spec.message: Field required"),
        ({"interval_seconds": "60", "spec": '{"message": NaN}'}, "NaN"),
        ({"interval_seconds": "60", "kind": "nope"}, "unknown job kind"),
        (
            {
                "interval_seconds": "60",
                "kind": "train",
                "spec": '{"dataset": "missing", "target": "y", "model_name": "m"}',
            },
            "missing",
        ),
    ],
)
def test_the_create_form_shows_the_api_s_reason(
    ops: Stack, user: TestClient, fields: dict[str, str], message: str
) -> None:
    data = {"name": "refused", "kind": "echo", "spec": '{"message": "x"}', **fields}
    response = user.post(
        "/ui/schedules", data={**data, "csrf_token": token(ops, "user")}, follow_redirects=False
    )
    assert response.status_code == 422, response.text[:1000]
    shown = schedule_error(response.text)
    assert message in shown, shown
    assert "<details" in response.text and 'id="create-schedule" open' in response.text
    if fields.get("cron"):
        assert f'value="{html.escape(fields["cron"])}"' in response.text  # kept as typed
    # the API says the same for the same request (when it is one JSON can carry)
    body: dict[str, object] = {"name": data["name"], "kind": data["kind"]}
    try:
        body["spec"] = json.loads(data["spec"], parse_constant=_no_constant)
    except ValueError:  # not a JSON body the API could be sent
        return
    for name in ("cron", "timezone"):
        if fields.get(name):
            body[name] = fields[name]
    if "interval_seconds" in fields:
        body["interval_seconds"] = fields["interval_seconds"]
    api = ops.api.post("/api/v1/schedules", json=body, headers=ops.headers("user"))
    if fields.get("interval_seconds") in ("nan", "-inf", "1e400"):
        return  # the API reads the string "nan" as NaN and names a bound instead
    assert api.status_code == 422, api.text
    if not isinstance(body["spec"], list):
        details = api.json()["detail"]
        assert any(d["msg"] in shown for d in details), (details, shown)


def test_a_taken_name_is_a_409_in_the_form(ops: Stack, user: TestClient) -> None:
    create_schedule(user, ops, name="taken", interval_seconds="60")
    response = user.post(
        "/ui/schedules",
        data={
            "name": "taken",
            "kind": "echo",
            "spec": '{"message": "x"}',
            "interval_seconds": "120",
            "csrf_token": token(ops, "user"),
        },
    )
    assert response.status_code == 409
    assert "a schedule named 'taken' exists" in schedule_error(response.text)


def test_a_paused_schedule_is_created_paused(ops: Stack, user: TestClient) -> None:
    schedule_id = create_schedule(
        user, ops, name="born-paused", interval_seconds="90", enabled="", allow_overlap="true"
    )
    made = api_schedule(ops, schedule_id)
    assert made["enabled"] is False and made["allow_overlap"] is True
    assert made["next_run_at"] is None


def test_unknown_schedules_and_odd_queries_are_not_500(ops: Stack, user: TestClient) -> None:
    t = token(ops, "user")
    for method, path in (
        ("get", "/ui/schedules/nothing"),
        ("get", "/ui/schedules/nothing/delete"),
        ("post", "/ui/schedules/nothing/pause"),
        ("post", "/ui/schedules/nothing/resume"),
        ("post", "/ui/schedules/nothing/run"),
        ("post", "/ui/schedules/nothing/delete"),
    ):
        response = getattr(user, method)(
            path, **({"data": {"csrf_token": t}} if method == "post" else {})
        )
        assert response.status_code == 404, path
        assert "schedule nothing not found" in error_of(response.text), path
    for query in ("offset=-1", "offset=99999999999999999999999", "offset=x", "deleted=<b>"):
        response = user.get(f"/ui/schedules?{query}")
        assert response.status_code == 200, query
        assert "<b>" not in response.text.split("<main>")[1], query  # escaped
    assert user.get("/ui/schedules?offset=a%00b").status_code == 422
    nul = user.post(
        "/ui/schedules", data={"name": "x\x00", "interval_seconds": "60", "csrf_token": t}
    )
    assert nul.status_code == 422 and "NUL" in error_of(nul.text)


# ---- workers and beat tasks --------------------------------------------------------------


def test_workers_show_host_state_heartbeat_jobs_and_queues(ops: Stack, viewer: TestClient) -> None:
    job = ops.submit("echo", spec={"message": "on a worker"})
    node = f"celery@ops-{secrets.token_hex(3)}"
    now = utcnow()
    with ops.runtime.transaction() as session:
        session.add(
            Worker(
                name=node,
                hostname="ops-host-1",
                pid=4242,
                queues=["default", "hpc"],
                concurrency=3,
                version="9.9.9",
                started_at=now - timedelta(minutes=5),
                last_seen_at=now,
            )
        )
        session.add(
            Worker(
                name=node + "-old",
                hostname="ops-host-2",
                pid=1,
                queues=["default"],
                concurrency=1,
                version="9.9.8",
                started_at=now - timedelta(hours=3),
                last_seen_at=now - timedelta(hours=2),
            )
        )
    with ops.runtime.transaction() as session:
        from submitter.db.models import Job

        row = session.get(Job, job["id"])
        assert row is not None
        row.state, row.worker = "running", f"{node}/777"
    page = viewer.get("/ui/workers")
    assert page.status_code == 200
    row_html = re.search(rf'<tr data-worker="{node}" data-state="online">.*?</tr>', page.text, re.S)
    assert row_html, page.text[:3000]
    text = row_html.group(0)
    assert "ops-host-1" in text and "pid 4242" in text and "s ago" in text
    assert f'href="/ui/jobs/{job["id"]}"' in text
    assert '<span class="chip">hpc</span>' in text and "state-online" in text
    assert f'<tr data-worker="{node}-old" data-state="offline">' in page.text
    assert "2 h ago" in page.text
    fragment = viewer.get("/ui/workers/table")
    assert "<html" not in fragment.text and 'hx-trigger="every 5s"' in fragment.text


def test_beat_tasks_show_interval_age_and_late(ops: Stack, viewer: TestClient) -> None:
    before = viewer.get("/ui/tasks")
    assert before.status_code == 200
    assert 'data-state="never"' in before.text and 'id="beat-warning"' in before.text
    intervals = ops.runtime.settings.maintenance_intervals
    late_name, ok_name = sorted(intervals)[:2]
    now = utcnow()
    with ops.runtime.transaction() as session:
        session.add(
            BeatTask(
                name=late_name,
                interval_seconds=intervals[late_name],
                last_started_at=now - timedelta(hours=1),
                last_duration_seconds=0.25,
                runs=10,
                failures=0,
                beat="beat-host/99",
            )
        )
        session.add(
            BeatTask(
                name=ok_name,
                interval_seconds=intervals[ok_name],
                last_started_at=now,
                last_duration_seconds=0.01,
                last_error=None,
                runs=3,
                failures=1,
                beat="beat-host/99",
            )
        )
    page = viewer.get("/ui/tasks").text
    assert f'<tr data-task="{late_name}" data-state="late">' in page
    assert f'<tr data-task="{ok_name}" data-state="ok">' in page
    assert "1 h ago" in page and "late" in page and "beat-host/99" in page
    assert "is <code>submitter beat</code> still running?" in page
    assert "every " in page and "0.25 s" in page


# ---- clusters ----------------------------------------------------------------------------


def test_clusters_show_public_settings_only(ops: Stack, admin: TestClient) -> None:
    page = admin.get("/ui/clusters")
    assert page.status_code == 200
    closed = next(c for c in ops.runtime.settings.clusters if c.name == "closed")
    assert f"nobody@127.0.0.1:{closed.port}" in page.text
    assert "/tmp/submitter-closed" in page.text
    assert str(closed.key_file) not in page.text and "id_test" not in page.text
    assert "known_hosts" not in page.text
    assert page.text.count('class="check-button"') == 2  # the admin's buttons
    assert 'hx-indicator="find .checking"' in page.text
    assert "check-button" not in sign_in(ops, "user").get("/ui/clusters").text


def test_the_check_of_an_unreachable_cluster_shows_why(ops: Stack, admin: TestClient) -> None:
    t = token(ops, "admin")
    closed = next(c for c in ops.runtime.settings.clusters if c.name == "closed")
    htmx = admin.post(
        "/ui/clusters/closed/check", data={"csrf_token": t}, headers={"HX-Request": "true"}
    )
    assert htmx.status_code == 200, htmx.text
    assert "<html" not in htmx.text  # the fragment the button swaps in
    assert 'id="check-error-closed"' in htmx.text
    message = html.unescape(htmx.text)
    assert f"cannot connect to 127.0.0.1:{closed.port}" in message, message
    plain = admin.post("/ui/clusters/closed/check", data={"csrf_token": t})
    assert plain.status_code == 502  # as the API answers; the page says why
    assert 'id="check-error-closed"' in plain.text and 'data-cluster="here"' in plain.text
    api = ops.api.post("/api/v1/clusters/closed/check", headers=ops.headers("admin"))
    assert api.status_code == 502 and api.json()["detail"] in message
    local = admin.post(
        "/ui/clusters/here/check", data={"csrf_token": t}, headers={"HX-Request": "true"}
    )
    assert local.status_code == 200 and "check-" in local.text  # ok or failed, never a 500
    missing = admin.post("/ui/clusters/nope/check", data={"csrf_token": t})
    assert missing.status_code == 404 and "known clusters" in error_of(missing.text)
    no_token = admin.post("/ui/clusters/closed/check", headers={"HX-Request": "true"})
    assert no_token.status_code == 403


# ---- service logs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(ops: Stack) -> dict[str, object]:
    """Service-log records of several services, hosts and levels, one of them a job's."""
    job = ops.submit("echo", spec={"message": "logged"})
    now = utcnow()
    rows = [
        ("api", "api-1", logging.INFO, "submitter.api", "GET /ready 200", None),
        ("worker", "worker-1", logging.INFO, "submitter.worker.runner", "job started", job["id"]),
        ("worker", "worker-2", logging.WARNING, "submitter.worker", "lease renewal slow", None),
        (
            "beat",
            "beat-1",
            logging.ERROR,
            "submitter.worker.beat",
            "reconcile failed\nTraceback (most recent call last):\n  File x\nValueError: boom",
            None,
        ),
        ("flower", "flower-1", logging.DEBUG, "flower", "<script>alert(1)</script>", None),
    ]
    with ops.runtime.transaction() as session:
        for i, (service, host, level, logger, message, job_id) in enumerate(rows):
            session.add(
                ServiceLog(
                    time=now - timedelta(seconds=len(rows) - i),
                    service=service,
                    host=host,
                    pid=100 + i,
                    level=level,
                    logger=logger,
                    message=message,
                    job_id=job_id,
                )
            )
    return {"job_id": job["id"]}


def log_ids(text: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="log-record[^"]*" data-id="(\d+)"', text)]


def log_messages(text: str) -> str:
    return " | ".join(re.findall(r'<td class="log-message">(.*?)</td>', text, re.S))


def test_logs_are_for_admins_only(ops: Stack, records: dict[str, object]) -> None:
    for role in ("user", "viewer"):
        client = sign_in(ops, role)
        for path in ("/ui/logs", "/ui/logs/newer?after_id=0"):
            response = client.get(path)
            assert response.status_code == 403, (role, path)
            assert "needs admin" in error_of(response.text)
            assert "lease renewal slow" not in response.text


def test_logs_show_records_newest_first_and_filter(
    ops: Stack, admin: TestClient, records: dict[str, object]
) -> None:
    page = admin.get("/ui/logs")
    assert page.status_code == 200
    ids = log_ids(page.text)
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    assert "lease renewal slow" in page.text and "reconcile failed" in page.text
    assert "<script>alert(1)</script>" not in page.text  # a message is text
    assert "&lt;script&gt;" in page.text
    assert "<details><summary>reconcile failed</summary>" in page.text  # its traceback folds
    job_id = records["job_id"]
    assert f'href="/ui/jobs/{job_id}"' in page.text  # job ids link to the job's page
    assert 'id="load-newer"' in page.text and 'id="follow-toggle"' in page.text

    def messages(query: str) -> str:
        response = admin.get(f"/ui/logs?{query}")
        assert response.status_code == 200, query
        return log_messages(response.text)

    assert messages("service=worker").count("|") == 1  # two records
    assert "GET /ready" not in messages("service=worker")
    assert messages("host=worker-2") == "lease renewal slow"
    warning = messages("level=WARNING")
    assert "lease renewal slow" in warning and "reconcile failed" in warning
    assert "job started" not in warning
    assert messages(f"job_id={job_id}") == "job started"
    assert messages(f"job_id={str(job_id)[:8]}") == "job started"  # a prefix, as shown
    assert messages("service=worker&level=warning") == "lease renewal slow"
    assert messages("service=all&host=nobody") == ""
    filtered = admin.get("/ui/logs?service=beat&level=ERROR")
    assert '<option value="beat" selected>' in filtered.text
    assert '<option value="ERROR" selected>' in filtered.text
    assert "/ui/logs/newer?service=beat&amp;level=ERROR&amp;after_id=" in filtered.text


def test_log_filters_that_the_api_refuses_are_messages(
    admin: TestClient, records: dict[str, object]
) -> None:
    for query, message in (
        ("service=kernel", "unknown service"),
        ("level=LOUD", "unknown level"),
        ("host=" + "h" * 300, "host: longer than 255"),
        ("job_id=" + "j" * 80, "job id: longer than 64"),
        ("offset=-3", ""),
        ("offset=123456789012345678901234567890", ""),
        ("after_id=abc", ""),
    ):
        response = admin.get(f"/ui/logs?{query}")
        assert response.status_code == 200, query
        if message:
            assert message in html.unescape(response.text), query
    for query in ("after_id=-1&added=x", "after_id=99999999999999999999999", "follow=yes"):
        assert admin.get(f"/ui/logs/newer?{query}").status_code == 200, query
    assert admin.get("/ui/logs?host=a%00b").status_code == 422


def test_load_newer_and_follow_add_the_new_records_on_top(
    ops: Stack, admin: TestClient, records: dict[str, object]
) -> None:
    page = admin.get("/ui/logs?service=api")
    newest = max(log_ids(page.text))
    nothing = admin.get(f"/ui/logs/newer?service=api&after_id={newest}")
    assert nothing.status_code == 200 and log_ids(nothing.text) == []
    assert f"after_id={newest}" in nothing.text and "<html" not in nothing.text
    with ops.runtime.transaction() as session:
        for i, service in enumerate(("api", "worker", "api")):
            session.add(
                ServiceLog(
                    time=utcnow(),
                    service=service,
                    host="api-1",
                    pid=1,
                    level=logging.INFO,
                    logger="submitter.api",
                    message=f"newer {i}",
                    job_id=None,
                )
            )
    newer = admin.get(f"/ui/logs/newer?service=api&after_id={newest}")
    ids = log_ids(newer.text)
    assert len(ids) == 2 and ids == sorted(ids, reverse=True) and min(ids) > newest
    assert log_messages(newer.text) == "newer 2 | newer 0"
    assert f"after_id={max(ids)}&amp;added=2" in newer.text
    assert "2 newer since the page loaded" in newer.text
    assert 'id="logs-newer"' in newer.text.split("<tr class=")[0]  # the next request first
    followed = admin.get(f"/ui/logs/newer?service=api&after_id={newest}&follow=1")
    assert 'hx-trigger="every 2s"' in followed.text and "follow=1" in followed.text
    following = admin.get("/ui/logs?service=api&follow=1")
    assert 'hx-trigger="every 2s"' in following.text and "Stop following" in following.text
    second_page = admin.get("/ui/logs?offset=100&follow=1")
    assert "logs-newer" not in second_page.text  # only the first page follows


@pytest.mark.parametrize("role", ["admin", "user", "viewer"])
def test_the_key_is_in_no_operations_page(ops: Stack, role: str) -> None:
    key = ops.keys[role]
    client = sign_in(ops, role)
    for path in (*VIEWER_PAGES, "/ui/logs", "/ui/logs?service=nope", "/ui/schedules/x"):
        response = client.get(path)
        assert response.status_code < 500, path
        assert key not in response.text, path
        assert all(key not in value for value in response.headers.values()), path
