"""`POST /api/v1/jobs/batch` on each backend, with the session's real worker and beat: all
or nothing, errors by index, idempotency per item, dependencies by position, the limit, and
a batch accepted while the broker is down."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from submitter.db.models import Job
from submitter.jobs.schemas import JobCreate
from submitter.jobs.service import submit_many
from submitter.runtime import Runtime
from tests.conftest import Stack, eventually

BATCH = "/api/v1/jobs/batch"


def _echo(message: str, **more: Any) -> dict[str, Any]:
    return {"kind": "echo", "spec": {"message": message}, **more}


def _post(stack: Stack, jobs: list[dict[str, Any]], role: str = "user") -> httpx.Response:
    return stack.api.post(BATCH, json={"jobs": jobs}, headers=stack.headers(role))


def _job_count(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_batch_runs_every_job_and_its_dependencies_in_order(stack: Stack) -> None:
    response = _post(
        stack,
        [
            _echo("a", spec={"message": "a", "sleep_seconds": 0.5}),
            _echo("b", depends_on=["#0"]),
            _echo("c", depends_on=["#0", "#1"]),
            _echo("d"),
        ],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["created"] == [True] * 4
    a, b, c, d = body["items"]
    assert [j["spec"]["message"] for j in body["items"]] == ["a", "b", "c", "d"]
    assert b["depends_on"] == [a["id"]] and c["depends_on"] == [a["id"], b["id"]]
    assert (a["phase"], b["phase"], d["phase"]) == (None, "waiting", None)
    done = {j["id"]: stack.wait(j["id"]) for j in body["items"]}
    assert {j["state"] for j in done.values()} == {"succeeded"}
    assert done[b["id"]]["started_at"] >= done[a["id"]]["finished_at"]
    assert done[c["id"]]["started_at"] >= done[b["id"]]["finished_at"]
    # An existing job id works beside positions, as in a single submission.
    after = _post(stack, [_echo("e", depends_on=[a["id"]]), _echo("f", depends_on=["#0"])])
    assert after.status_code == 202, after.text
    e, f = after.json()["items"]
    assert e["phase"] is None and f["depends_on"] == [e["id"]]
    assert stack.wait(f["id"])["state"] == "succeeded"


def test_errors_name_each_bad_job_by_index_and_nothing_is_stored(stack: Stack) -> None:
    before = _job_count(stack)
    response = _post(
        stack,
        [
            _echo("fine"),
            {"kind": "echo", "spec": {}},
            {"kind": "nope", "spec": {}},
            _echo("forward", depends_on=["#4"]),
            _echo("self", depends_on=["#0", "#4"]),
            _echo("unknown", depends_on=["f" * 32]),
            _echo("not a position", depends_on=["#x"]),
        ],
    )
    assert response.status_code == 422, response.text
    errors = {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}
    assert set(errors) == {
        ("body", "jobs", 1, "spec", "message"),
        ("body", "jobs", 2, "kind"),
        ("body", "jobs", 3, "depends_on", 0),
        ("body", "jobs", 4, "depends_on", 1),
        ("body", "jobs", 5, "depends_on"),
        ("body", "jobs", 6, "depends_on", 0),
    }, errors
    assert "earlier" in errors[("body", "jobs", 3, "depends_on", 0)]
    assert "#0 to #3" in errors[("body", "jobs", 4, "depends_on", 1)]
    assert "f" * 32 in errors[("body", "jobs", 5, "depends_on")]
    assert _job_count(stack) == before
    # A position means nothing outside a batch.
    single = stack.api.post(
        "/api/v1/jobs", json=_echo("x", depends_on=["#0"]), headers=stack.headers("user")
    )
    assert single.status_code == 422
    assert single.json()["detail"][0]["loc"] == ["body", "depends_on", 0]


def test_the_limit_is_1000_jobs(stack: Stack) -> None:
    before = _job_count(stack)
    too_many = _post(stack, [_echo(str(i)) for i in range(1001)])
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "jobs"]
    assert _post(stack, []).status_code == 422
    assert _job_count(stack) == before


def test_idempotency_keys_are_honoured_per_job(stack: Stack) -> None:
    old_key, new_key, other = (f"{n}-{uuid.uuid4()}" for n in ("old", "new", "other"))
    first = stack.submit(role="user", spec={"message": "old"}, idempotency_key=old_key)
    jobs = [
        _echo("old", idempotency_key=old_key),
        _echo("new", idempotency_key=new_key),
        _echo("new again", idempotency_key=new_key),
        _echo("after", idempotency_key=other, depends_on=["#0", "#2"]),
    ]
    response = _post(stack, jobs)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["created"] == [False, True, False, True]
    ids = [j["id"] for j in body["items"]]
    assert ids[0] == first["id"] and ids[1] == ids[2]
    assert body["items"][3]["depends_on"] == [ids[0], ids[1]]
    again = _post(stack, jobs)
    assert again.status_code == 200
    assert again.json()["created"] == [False] * 4
    assert [j["id"] for j in again.json()["items"]] == ids
    assert stack.wait(ids[3])["state"] == "succeeded"


def test_a_batch_accepted_while_the_broker_is_down_runs_later(stack: Stack) -> None:
    if stack.backend.name != "postgres-redis":
        pytest.skip("the reconciler's re-send is the same on every broker; one is enough")
    down = stack.backend.settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    runtime = Runtime(down)
    try:
        requests = [JobCreate(kind="echo", spec={"message": f"patient {i}"}) for i in range(3)]
        requests.append(JobCreate(kind="echo", spec={"message": "last"}, depends_on=["#2"]))
        submitted = submit_many(runtime, "test", requests)
    finally:
        runtime.close()
    assert all(created and job.state == "queued" for job, created in submitted)
    # Beat's reconciler sends them after SUBMITTER_REQUEUE_AFTER_SECONDS (3 s here).
    for job, _ in submitted:
        eventually(lambda j=job: stack.job(j.id)["state"] == "succeeded", timeout=60)


def test_short_jobs_of_a_batch_share_messages_and_each_runs_once(stack: Stack) -> None:
    # 16 ready echo jobs: 8 messages of 2 (the run_jobs task), each job claimed on its own.
    response = _post(stack, [_echo(f"shared {i}") for i in range(16)])
    assert response.status_code == 202, response.text
    ids = [job["id"] for job in response.json()["items"]]
    for job_id in ids:
        done = stack.wait(job_id)
        assert (done["state"], done["attempts"]) == ("succeeded", 1)
        assert stack.logs(job_id).count("finished: succeeded") == 1
