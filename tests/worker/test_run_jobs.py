"""`runner.run_jobs`: the jobs of one message claimed in one statement and recorded a few at
a time, in-process on each backend (no worker or beat runs here, so nothing else claims
them): each is recorded once with its own log, a job that is no longer ours while it waits
its turn is not started, and a message's job that the grouped claim cannot take (a
dependency not met) is left to the per-job path; the claims waiting their turn are
renewed while a long job runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from submitter.db.models import Job
from submitter.jobs.schemas import JobCreate
from submitter.jobs.service import insert_jobs
from submitter.worker.runner import run_jobs
from tests.conftest import Backend, Stack, eventually, make_stack

WORKER = "test-host/1"


@pytest.fixture
def quiet_stack(fresh_backend: Backend) -> Iterator[Stack]:
    with make_stack(fresh_backend, worker=False, beat=False) as stack:
        yield stack


def _insert(stack: Stack, *specs: dict[str, Any], depends_on: list[str] | None = None) -> list[str]:
    """Queued jobs whose messages are never sent: only the test's run_jobs runs them."""
    requests = [JobCreate(kind="echo", spec=spec, depends_on=depends_on or []) for spec in specs]
    with stack.runtime.engine.begin() as connection:
        batch = insert_jobs(stack.runtime, connection, "tester", requests)
    return [job.id for job in batch.jobs]


def test_each_job_of_a_message_is_recorded_once_with_its_own_log(quiet_stack: Stack) -> None:
    ids = _insert(quiet_stack, *({"message": f"m{i}"} for i in range(6)))
    outcomes = run_jobs(quiet_stack.runtime, ids, WORKER, in_pool_child=False)
    assert outcomes == ["succeeded"] * 6
    for n, job_id in enumerate(ids):
        job = quiet_stack.job(job_id)
        assert (job["state"], job["attempts"], job["worker"]) == ("succeeded", 1, WORKER)
        assert job["result"]["message"] == f"m{n}"
        assert quiet_stack.logs(job_id) == [
            f"started on {WORKER} (attempt 1)",
            f"echo: m{n}",
            "finished: succeeded",
        ]
    # A repeated message finds them finished: nothing runs twice.
    assert run_jobs(quiet_stack.runtime, ids, WORKER, in_pool_child=False) == ["dropped"] * 6


def test_a_job_cancelled_while_it_waits_its_turn_is_not_started(quiet_stack: Stack) -> None:
    first, second = _insert(quiet_stack, {"message": "slow", "sleep_seconds": 3}, {"message": "x"})
    outcomes: list[str] = []
    runner = threading.Thread(
        target=lambda: outcomes.extend(
            run_jobs(quiet_stack.runtime, [first, second], WORKER, in_pool_child=False)
        )
    )
    runner.start()
    try:
        # Both were claimed together; the second waits while the first sleeps.
        eventually(lambda: quiet_stack.job(second)["state"] == "running", timeout=10)
        response = quiet_stack.api.post(
            f"/api/v1/jobs/{second}/cancel", headers=quiet_stack.headers("user")
        )
        assert response.status_code == 200, response.text
    finally:
        runner.join(60)
    assert outcomes == ["succeeded", "superseded"]
    assert quiet_stack.job(second)["state"] == "cancelled"
    assert "echo: x" not in quiet_stack.logs(second)


def test_a_job_the_grouped_claim_cannot_take_goes_the_per_job_way(quiet_stack: Stack) -> None:
    [done] = _insert(quiet_stack, {"message": "dependency"})
    [waiting] = _insert(quiet_stack, {"message": "dependent"}, depends_on=[done])
    [ready] = _insert(quiet_stack, {"message": "ready"})
    # `waiting` cannot start (its dependency has not run): dropped, the others run.
    outcomes = run_jobs(quiet_stack.runtime, [waiting, ready], WORKER, in_pool_child=False)
    assert outcomes == ["dropped", "succeeded"]
    assert quiet_stack.job(waiting)["state"] == "queued"
    # Once the dependency succeeded, the message (re-sent by the reconciler) runs it.
    assert run_jobs(quiet_stack.runtime, [done], WORKER, in_pool_child=False) == ["succeeded"]
    assert run_jobs(quiet_stack.runtime, [waiting], WORKER, in_pool_child=False) == ["succeeded"]


def test_the_claims_waiting_their_turn_are_renewed_while_a_long_job_runs(
    quiet_stack: Stack,
) -> None:
    lease = quiet_stack.runtime.settings.job_lease_seconds  # 3 s in the tests
    first, second = _insert(
        quiet_stack, {"message": "long", "sleep_seconds": lease + 2}, {"message": "next"}
    )
    runner = threading.Thread(
        target=run_jobs,
        args=(quiet_stack.runtime, [first, second], WORKER),
        kwargs={"in_pool_child": False},
    )
    runner.start()
    try:
        claimed = eventually(lambda: _lease(quiet_stack, second), timeout=10)
        # Past the claim's own lease, the first job still running: the second's was renewed.
        eventually(lambda: _lease(quiet_stack, second) > claimed, timeout=lease + 1)
        assert quiet_stack.job(first)["state"] == "running"
    finally:
        runner.join(60)
    assert quiet_stack.job(second)["state"] == "succeeded"
    assert quiet_stack.job(second)["attempts"] == 1


def _lease(stack: Stack, job_id: str) -> Any:
    with stack.runtime.reads() as session:
        return session.scalar(select(Job.lease_expires_at).where(Job.id == job_id))
