"""Schedules on each backend, with the real beat firing them and a real worker running the
jobs: interval and cron timing, pause, overlap, validation, run-now, datasets resolved at each
run, revoked keys, and two beats firing one run once."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from submitter.db.models import Schedule
from submitter.jobs import service as jobs
from submitter.schedules import service as schedules
from submitter.security import Role, create_key, revoke_key
from tests.api.test_datasets import SMALL, upload
from tests.conftest import Stack, eventually


@pytest.fixture
def made(stack: Stack) -> Iterator[list[str]]:
    """Ids of the schedules a test made, deleted afterwards: the stack is shared and a
    forgotten interval schedule would keep submitting jobs for the rest of the session."""
    ids: list[str] = []
    yield ids
    for schedule_id in ids:
        stack.api.delete(f"/api/v1/schedules/{schedule_id}", headers=stack.headers("admin"))


def _create(stack: Stack, made: list[str], role: str = "user", **body: Any) -> dict[str, Any]:
    body = {"name": f"s-{uuid.uuid4().hex[:10]}", "kind": "echo", "spec": {"message": "hi"}, **body}
    response = stack.api.post("/api/v1/schedules", json=body, headers=stack.headers(role))
    assert response.status_code == 201, response.text
    schedule: dict[str, Any] = response.json()
    made.append(schedule["id"])
    return schedule


def _get(stack: Stack, ref: str) -> dict[str, Any]:
    response = stack.api.get(f"/api/v1/schedules/{ref}", headers=stack.headers("viewer"))
    assert response.status_code == 200, response.text
    schedule: dict[str, Any] = response.json()
    return schedule


def _jobs_of(stack: Stack, schedule_id: str) -> list[dict[str, Any]]:
    response = stack.api.get(
        "/api/v1/jobs",
        params={"schedule": schedule_id, "limit": 1000},
        headers=stack.headers("viewer"),
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _pause(stack: Stack, schedule_id: str) -> dict[str, Any]:
    response = stack.api.patch(
        f"/api/v1/schedules/{schedule_id}", json={"enabled": False}, headers=stack.headers("user")
    )
    assert response.status_code == 200, response.text
    paused: dict[str, Any] = response.json()
    return paused


def test_interval_schedule_submits_jobs_that_run_until_paused(
    stack: Stack, made: list[str]
) -> None:
    schedule = _create(stack, made, interval_seconds=1, spec={"message": "tick"})
    assert schedule["enabled"] is True
    assert schedule["next_run_at"] is not None
    assert schedule["spec"] == {"message": "tick", "sleep_seconds": 0.0, "fail": False}

    done = eventually(
        lambda: [j for j in _jobs_of(stack, schedule["id"]) if j["state"] == "succeeded"][2:]
    )
    assert all(j["result"]["message"] == "tick" for j in done)
    assert all(j["schedule_id"] == schedule["id"] for j in _jobs_of(stack, schedule["id"]))

    paused = _pause(stack, schedule["id"])
    assert paused["next_run_at"] is None
    time.sleep(1)  # a tick that read the schedule before the pause may still submit once
    count = len(_jobs_of(stack, schedule["id"]))
    time.sleep(3)  # three intervals, six beat ticks
    assert len(_jobs_of(stack, schedule["id"])) == count
    shown = _get(stack, schedule["name"])
    assert shown["runs"] == count
    assert len(_jobs_of(stack, schedule["name"])) == count  # the name does as well as the id
    unknown = stack.api.get(
        "/api/v1/jobs", params={"schedule": "no-such-schedule"}, headers=stack.headers("viewer")
    )
    assert unknown.status_code == 404
    assert shown["last_job_id"] in {j["id"] for j in _jobs_of(stack, schedule["id"])}


def test_a_run_is_skipped_while_the_previous_one_is_still_active(
    stack: Stack, made: list[str]
) -> None:
    schedule = _create(
        stack, made, interval_seconds=1, spec={"message": "slow", "sleep_seconds": 3}
    )
    skipped = eventually(
        lambda: (
            "is still" in (_get(stack, schedule["id"])["last_message"] or "")
            and _get(stack, schedule["id"])
        )
    )
    assert "not submitted: the previous run, job" in skipped["last_message"]
    eventually(
        lambda: [j for j in _jobs_of(stack, schedule["id"]) if j["state"] == "succeeded"][1:]
    )
    _pause(stack, schedule["id"])
    runs = sorted(_jobs_of(stack, schedule["id"]), key=lambda j: j["created_at"])
    for earlier, later in itertools.pairwise(runs):
        # Never two at once: each job was submitted after the one before it had ended.
        assert earlier["finished_at"] is not None
        assert later["created_at"] >= earlier["finished_at"], (earlier, later)


def test_overlap_can_be_allowed(stack: Stack, made: list[str]) -> None:
    schedule = _create(
        stack,
        made,
        interval_seconds=1,
        allow_overlap=True,
        spec={"message": "x", "sleep_seconds": 4},
    )
    # A new job each second although each runs for four.
    eventually(lambda: len(_jobs_of(stack, schedule["id"])) >= 3)
    _pause(stack, schedule["id"])
    assert _get(stack, schedule["id"])["last_message"] is None


def test_cron_schedule_fires_at_the_next_local_match(stack: Stack, made: list[str]) -> None:
    schedule = _create(stack, made, cron="0 3 * * *", timezone="Europe/Helsinki")
    zone = ZoneInfo("Europe/Helsinki")
    now = datetime.now(zone)
    expected = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if expected <= now:
        expected = (now + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(schedule["next_run_at"]) == expected.astimezone(UTC)
    assert schedule["interval_seconds"] is None

    switched = stack.api.patch(
        f"/api/v1/schedules/{schedule['name']}",
        json={"interval_seconds": 3600},
        headers=stack.headers("user"),
    ).json()
    assert switched["cron"] is None
    assert switched["interval_seconds"] == 3600
    next_run = datetime.fromisoformat(switched["next_run_at"])
    assert timedelta(minutes=59) < next_run - datetime.now(UTC) <= timedelta(hours=1)


def test_run_now_and_datasets_resolved_at_each_run(stack: Stack, made: list[str]) -> None:
    name = f"sched-{uuid.uuid4().hex[:8]}"
    first = upload(stack, name, SMALL).json()
    schedule = _create(
        stack, made, kind="describe", enabled=False, cron="@daily", spec={"dataset": name}
    )
    assert schedule["next_run_at"] is None
    assert schedule["spec"]["dataset"] == name  # kept as given, not pinned to version 1

    def run() -> dict[str, Any]:
        response = stack.api.post(
            f"/api/v1/schedules/{schedule['id']}/run", headers=stack.headers("user")
        )
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return stack.wait(job["id"])

    one = run()
    assert one["state"] == "succeeded", one
    assert one["spec"]["dataset"] == first["id"]
    second = upload(stack, name, SMALL + b"4,w,2.5\n").json()
    assert second["version"] == 2
    two = run()
    assert two["spec"]["dataset"] == second["id"]
    assert two["schedule_id"] == schedule["id"]
    shown = _get(stack, schedule["id"])
    assert shown["runs"] == 2
    assert shown["last_job_id"] == two["id"]


def test_a_run_whose_dataset_is_gone_is_refused_and_the_schedule_stays(
    stack: Stack, made: list[str]
) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    upload(stack, name, SMALL)
    schedule = _create(stack, made, kind="describe", interval_seconds=3600, spec={"dataset": name})
    deleted = stack.api.delete(f"/api/v1/datasets/{name}@1", headers=stack.headers("user"))
    assert deleted.status_code == 204, deleted.text
    _make_due(stack, schedule["id"])
    refused = eventually(
        lambda: (_get(stack, schedule["id"])["last_message"] or "") and _get(stack, schedule["id"])
    )
    assert "refused" in refused["last_message"] and "spec.dataset" in refused["last_message"]
    assert refused["enabled"] is True
    assert refused["runs"] == 0
    assert datetime.fromisoformat(refused["next_run_at"]) > datetime.now(UTC)
    assert _jobs_of(stack, schedule["id"]) == []


def test_revoking_the_key_disables_its_schedules(stack: Stack, made: list[str]) -> None:
    with stack.runtime.transaction() as session:
        row, key = create_key(session, f"cron-{uuid.uuid4().hex[:6]}", Role.user)
    body = {
        "name": f"s-{uuid.uuid4().hex[:10]}",
        "kind": "echo",
        "spec": {"message": "hi"},
        "interval_seconds": 3600,
    }
    response = stack.api.post(
        "/api/v1/schedules", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text
    schedule = response.json()
    made.append(schedule["id"])
    with stack.runtime.transaction() as session:
        revoke_key(session, row.id)
    _make_due(stack, schedule["id"])
    disabled = eventually(
        lambda: not _get(stack, schedule["id"])["enabled"] and _get(stack, schedule["id"])
    )
    assert "revoked" in disabled["last_message"]
    assert disabled["next_run_at"] is None
    assert _jobs_of(stack, schedule["id"]) == []


def _make_due(stack: Stack, schedule_id: str) -> None:
    with stack.runtime.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_two_beats_firing_the_same_run_submit_one_job(stack: Stack, made: list[str]) -> None:
    schedule = _create(stack, made, interval_seconds=3600, spec={"message": "once"})
    due = datetime.now(UTC) - timedelta(seconds=30)
    with stack.runtime.transaction() as session:
        session.execute(
            update(Schedule).where(Schedule.id == schedule["id"]).values(next_run_at=due)
        )
    # Eight "beats" fire at once, besides the real beat process.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: schedules.fire_due(stack.runtime), range(8)))
    runs = eventually(lambda: _jobs_of(stack, schedule["id"]))
    time.sleep(1)  # the real beat ticks twice more
    assert len(_jobs_of(stack, schedule["id"])) == len(runs) == 1
    shown = _get(stack, schedule["id"])
    assert shown["runs"] == 1
    assert datetime.fromisoformat(shown["next_run_at"]) == due + timedelta(hours=1)
    assert stack.wait(runs[0]["id"])["state"] == "succeeded"


def test_a_beat_that_died_after_submitting_is_not_repeated(stack: Stack, made: list[str]) -> None:
    schedule = _create(stack, made, enabled=False, interval_seconds=3600)
    due = datetime.now(UTC) - timedelta(seconds=5)
    # The dead beat's half: the job was submitted, next_run_at was not advanced.
    job, created = jobs.submit(
        stack.runtime,
        kind="echo",
        spec=schedule["spec"],
        owner=_owner(stack, schedule["id"]),
        idempotency_key=f"schedule:{schedule['id']}:{due.isoformat()}",
        schedule_id=schedule["id"],
    )
    assert created
    with stack.runtime.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule["id"])
            .values(next_run_at=due, enabled=True)
        )
    eventually(lambda: datetime.fromisoformat(_get(stack, schedule["id"])["next_run_at"]) > due)
    assert [j["id"] for j in _jobs_of(stack, schedule["id"])] == [job.id]
    assert _get(stack, schedule["id"])["last_job_id"] == job.id


def _owner(stack: Stack, schedule_id: str) -> str:
    with stack.runtime.reads() as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None
        return row.owner


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "echo"}, "body"),
        ({"kind": "echo", "cron": "0 3 * * *", "interval_seconds": 60}, "body"),
        ({"kind": "echo", "cron": "0 3 * *"}, "body.cron"),
        ({"kind": "echo", "cron": "$(reboot) * * * *"}, "body.cron"),
        ({"kind": "echo", "cron": "0 0 30 2 *"}, "body.cron"),
        ({"kind": "echo", "cron": "@daily", "timezone": "Mars/Olympus"}, "body.timezone"),
        ({"kind": "echo", "interval_seconds": 0.1}, "body.interval_seconds"),
        ({"kind": "nope", "cron": "@daily"}, "body.kind"),
        (
            {"kind": "echo", "cron": "@daily", "spec": {"sleep_seconds": "x"}},
            "body.spec.sleep_seconds",
        ),
        (
            {"kind": "describe", "cron": "@daily", "spec": {"dataset": "no-such"}},
            "body.spec.dataset",
        ),
        ({"kind": "echo", "cron": "@daily", "name": "../x"}, "body.name"),
        ({"kind": "echo", "cron": "@daily", "colour": "red"}, "body.colour"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    body = {"name": f"bad-{uuid.uuid4().hex[:8]}", **body}
    response = stack.api.post("/api/v1/schedules", json=body, headers=stack.headers("user"))
    assert response.status_code == 422, response.text
    locations = [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]
    assert field in locations, locations
    assert (
        stack.api.get(
            f"/api/v1/schedules/{body['name']}", headers=stack.headers("viewer")
        ).status_code
        == 404
    )


def test_names_roles_and_missing_schedules(stack: Stack, made: list[str]) -> None:
    schedule = _create(stack, made, cron="@daily")
    again = stack.api.post(
        "/api/v1/schedules",
        json={
            "name": schedule["name"],
            "kind": "echo",
            "spec": {"message": "hi"},
            "cron": "@hourly",
        },
        headers=stack.headers("user"),
    )
    assert again.status_code == 409
    assert schedule["name"] in again.json()["detail"]
    viewer = stack.headers("viewer")
    body = {"name": "viewer-made", "kind": "echo", "cron": "@daily"}
    assert stack.api.post("/api/v1/schedules", json=body, headers=viewer).status_code == 403
    assert (
        stack.api.patch(f"/api/v1/schedules/{schedule['id']}", json={}, headers=viewer).status_code
        == 403
    )
    assert (
        stack.api.delete(f"/api/v1/schedules/{schedule['id']}", headers=viewer).status_code == 403
    )
    assert stack.api.get("/api/v1/schedules").status_code == 401
    listed = stack.api.get("/api/v1/schedules", params={"limit": 1000}, headers=viewer).json()
    assert schedule["id"] in {s["id"] for s in listed["items"]}
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {}} if method == "patch" else {}
        missing = getattr(stack.api, method)(
            "/api/v1/schedules/no-such", headers=stack.headers("user"), **kwargs
        )
        assert missing.status_code == 404, (method, missing.text)
    bad_patch = stack.api.patch(
        f"/api/v1/schedules/{schedule['id']}",
        json={"spec": {"fail": "sometimes"}},
        headers=stack.headers("user"),
    )
    assert bad_patch.status_code == 422
    assert _get(stack, schedule["id"])["spec"] == schedule["spec"]  # nothing accepted is lost
    gone = stack.api.delete(f"/api/v1/schedules/{schedule['name']}", headers=stack.headers("user"))
    assert gone.status_code == 204
    assert stack.api.get(f"/api/v1/schedules/{schedule['id']}", headers=viewer).status_code == 404
