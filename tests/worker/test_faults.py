"""Fault tests: workers killed mid-job, broker messages lost, broker down at submit.

Each test gets a backend of its own (fresh database and queues) and real processes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from sqlalchemy import select

from submitter.db.models import Job, JobLog
from submitter.jobs.service import submit
from submitter.runtime import Runtime
from tests.conftest import Backend, Stack, make_stack


def _states(stack: Stack, ids: list[str]) -> dict[str, str]:
    with stack.runtime.sessions() as session:
        rows = session.execute(select(Job.id, Job.state).where(Job.id.in_(ids)))
        return dict(rows.tuples().all())


def _wait_states(
    stack: Stack, ids: list[str], done: Any, timeout: float, what: str
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = _states(stack, ids)
        if done(states):
            return states
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in stack.processes)
            counts = {s: list(states.values()).count(s) for s in set(states.values())}
            raise AssertionError(f"timed out waiting for {what}: {counts}\n{tails}")
        time.sleep(0.2)


def _finish_lines(stack: Stack, ids: list[str]) -> dict[str, int]:
    """How many times each job's completion was recorded."""
    with stack.runtime.sessions() as session:
        rows = session.execute(
            select(JobLog.job_id).where(JobLog.job_id.in_(ids), JobLog.message.like("finished: %"))
        ).scalars()
        counts = dict.fromkeys(ids, 0)
        for job_id in rows:
            counts[job_id] += 1
        return counts


def _assert_all_succeeded_once(stack: Stack, ids: list[str]) -> None:
    _wait_states(
        stack,
        ids,
        lambda s: all(v == "succeeded" for v in s.values()),
        timeout=120,
        what=f"all {len(ids)} succeeded",
    )
    assert set(_finish_lines(stack, ids).values()) == {1}, "a completion was recorded twice"


def test_sigkill_worker_mid_run_loses_nothing_and_completes_nothing_twice(
    fresh_backend: Backend,
) -> None:
    with make_stack(fresh_backend) as stack:
        first_worker = stack.processes[0]
        ids = [
            stack.submit(spec={"message": f"job-{i}", "sleep_seconds": 0.4})["id"]
            for i in range(50)
        ]
        _wait_states(
            stack,
            ids,
            lambda s: list(s.values()).count("succeeded") >= 4 and "running" in s.values(),
            timeout=60,
            what="some jobs succeeded and some running",
        )
        first_worker.kill_group()
        at_kill = _states(stack, ids)
        running_at_kill = [i for i, s in at_kill.items() if s == "running"]
        assert running_at_kill, "the kill should catch jobs mid-run"
        assert list(at_kill.values()).count("queued") > 0

        stack.start("worker", "--concurrency=2")
        _assert_all_succeeded_once(stack, ids)
        with stack.runtime.sessions() as session:
            attempts = dict(
                session.execute(select(Job.id, Job.attempts).where(Job.id.in_(ids))).tuples().all()
            )
        # Jobs the dead worker held ran again; the lost attempt is counted.
        for job_id in running_at_kill:
            assert attempts[job_id] >= 2, (job_id, attempts[job_id])


@pytest.mark.parametrize("fresh_backend", ["embedded"], indirect=True)
def test_job_lost_more_than_max_attempts_fails_clearly(fresh_backend: Backend) -> None:
    fresh_backend.env["SUBMITTER_JOB_MAX_ATTEMPTS"] = "1"
    with make_stack(fresh_backend) as stack:
        job = stack.submit(spec={"message": "doomed", "sleep_seconds": 30})
        stack.wait(job["id"], lambda j: j["state"] == "running")
        stack.processes[0].kill_group()
        done = stack.wait(job["id"], timeout=30)
        assert done["state"] == "failed"
        assert done["error"].startswith("worker lost 1 times")


@pytest.mark.parametrize("fresh_backend", ["postgres-redis"], indirect=True)
def test_reconciler_resends_jobs_whose_queue_keys_were_deleted(fresh_backend: Backend) -> None:
    with make_stack(fresh_backend, worker=False, beat=False) as stack:
        ids = [stack.submit(spec={"message": f"lost-{i}"})["id"] for i in range(100)]
        broker = redis.Redis.from_url(fresh_backend.env["SUBMITTER_BROKER_URL"])
        assert broker.llen("default") == 100
        broker.delete("default", "train", "hpc")
        assert broker.llen("default") == 0

        stack.start("worker", "--concurrency=2")
        stack.start("beat")
        _assert_all_succeeded_once(stack, ids)


@pytest.mark.parametrize("fresh_backend", ["postgres-redis"], indirect=True)
def test_job_accepted_while_broker_is_down_runs_later(fresh_backend: Backend) -> None:
    # An API whose broker is unreachable still accepts the job: it is in the database.
    down = fresh_backend.settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    runtime = Runtime(down)
    try:
        job, created = submit(runtime, kind="echo", spec={"message": "patient"}, owner="test")
    finally:
        runtime.close()
    assert created and job.state == "queued"
    with make_stack(fresh_backend) as stack:
        assert stack.wait(job.id, timeout=60)["state"] == "succeeded"
