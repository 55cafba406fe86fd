"""Running one job on a worker: claim, heartbeat, run, record. Read top to bottom.

Exactly-once completion rests on two conditional updates:

1. *claim*: `queued → running` only if the row is still `queued`; it sets a fresh
   `run_token` and a lease. A redelivered or duplicate message finds the job `running` or
   finished and is dropped.
2. *finish*: `running → succeeded/failed` only if the row still holds our `run_token`. A
   worker whose lease was taken over (it was presumed dead) or whose job was cancelled
   records nothing.

While the run function works, a heartbeat thread renews the lease. When the renewal
finds the job no longer ours (cancelled, or reclaimed), it sets the context's `cancelled`
event; a run function that does not stop within `cancel_grace_seconds` has its pool process
killed (Celery's prefork pool replaces it; the redelivered message is dropped at claim).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import traceback
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from submitter.db.models import Job, JobLog
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs.context import JobCancelled, JobContext
from submitter.jobs.registry import get_kind
from submitter.jobs.service import add_log, dependency_states, resolve_dependents
from submitter.jobs.states import JobState
from submitter.logs import job_id_var
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)


def run_job(runtime: Runtime, job_id: str, worker_name: str, *, in_pool_child: bool) -> str:
    """Run job `job_id` if this message may; return what happened (for logs and tests)."""
    token = uuid.uuid4().hex
    claimed = _claim(runtime, job_id, token, worker_name)
    if claimed is None:
        return "dropped"
    kind_name, spec, attempt = claimed
    reset = job_id_var.set(job_id)
    try:
        outcome = _execute(runtime, job_id, token, kind_name, spec, attempt, in_pool_child)
    finally:
        job_id_var.reset(reset)
    resolve_dependents(runtime, job_id)
    return outcome


def _claim(
    runtime: Runtime, job_id: str, token: str, worker_name: str
) -> tuple[str, dict[str, Any], int] | None:
    now = utcnow()
    lease = timedelta(seconds=runtime.settings.job_lease_seconds)
    with runtime.transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            logger.warning("message for unknown job %s dropped", job_id)
            return None
        if job.state != JobState.queued:
            logger.info("job %s is %s: duplicate message dropped", job_id, job.state)
            return None
        if job.dependencies:
            # A message may come early (a reconciler race): start only when all deps succeeded.
            states = dependency_states(session, job.depends_on)
            if any(state != JobState.succeeded for state in states.values()):
                return None
        claimed = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.queued)
            .values(
                state=JobState.running,
                phase=None,
                attempts=Job.attempts + 1,
                started_at=now,
                lease_expires_at=now + lease,
                run_token=token,
                worker=worker_name,
                error=None,
            ),
        )
        if not claimed:
            return None
        attempt = job.attempts + 1
        add_log(session, job_id, f"started on {worker_name} (attempt {attempt})")
        return job.kind, dict(job.spec), attempt


def _execute(
    runtime: Runtime,
    job_id: str,
    token: str,
    kind_name: str,
    spec: dict[str, Any],
    attempt: int,
    in_pool_child: bool,
) -> str:
    context = JobContext(
        job_id=job_id,
        attempt=attempt,
        log_line=lambda level, message: _log_line(runtime, job_id, level, message),
        report_progress=lambda f, m, p: _report_progress(runtime, job_id, token, f, m, p),
    )
    heartbeat = Heartbeat(runtime, job_id, token, context.cancelled, kill_on_stuck=in_pool_child)
    heartbeat.start()
    result: Any = None
    error: str | None = None
    try:
        kind = get_kind(kind_name)
        result = kind.run(kind.spec_model.model_validate(spec), context)
        json.dumps(result)  # the result goes into a JSON column; fail here, clearly
        state = JobState.succeeded
    except JobCancelled:
        state = JobState.cancelled
    except Exception as exc:
        state = JobState.failed
        error = f"{type(exc).__name__}: {exc}"[:2000]
        _log_line(runtime, job_id, "ERROR", traceback.format_exc())
        logger.warning("job %s failed: %s", job_id, error)
    finally:
        heartbeat.stop()
    return _finish(runtime, job_id, token, state, result, error)


def _finish(
    runtime: Runtime,
    job_id: str,
    token: str,
    state: JobState,
    result: Any,
    error: str | None,
) -> str:
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "lease_expires_at": None}
    if state == JobState.succeeded:
        values.update(result=result, progress=1.0, phase=None)
    elif state == JobState.failed:
        values.update(error=error, message=error)
    with runtime.transaction() as session:
        recorded = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.run_token == token, Job.state == JobState.running)
            .values(**values),
        )
        if recorded:
            add_log(session, job_id, f"finished: {state}")
    if recorded:
        return str(state)
    # Cancelled meanwhile, or the lease was taken over: the row is someone else's now.
    _log_line(runtime, job_id, "INFO", f"run on this worker stopped ({state}): job no longer ours")
    return "superseded"


def _log_line(runtime: Runtime, job_id: str, level: str, message: str) -> None:
    with runtime.transaction() as session:
        session.add(JobLog(job_id=job_id, level=level, message=message))


def _report_progress(
    runtime: Runtime,
    job_id: str,
    token: str,
    fraction: float | None,
    message: str | None,
    phase: str | None,
) -> None:
    values: dict[str, Any] = {}
    if fraction is not None:
        values["progress"] = fraction
    if message is not None:
        values["message"] = message
    if phase is not None:
        values["phase"] = phase
    if values:
        with runtime.transaction() as session:
            session.execute(
                update(Job).where(Job.id == job_id, Job.run_token == token).values(**values)
            )


class Heartbeat(threading.Thread):
    """Renews the job's lease; notices cancellation and takeover."""

    def __init__(
        self,
        runtime: Runtime,
        job_id: str,
        token: str,
        cancelled: threading.Event,
        *,
        kill_on_stuck: bool,
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.runtime = runtime
        self.job_id = job_id
        self.token = token
        self.cancelled = cancelled
        self.kill_on_stuck = kill_on_stuck
        self._stop_event = threading.Event()
        lease = runtime.settings.job_lease_seconds
        # Often enough to survive two missed beats, and to notice a cancel quickly.
        self.interval = max(0.25, min(1.0, lease / 3))

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        lease = timedelta(seconds=self.runtime.settings.job_lease_seconds)
        while not self._stop_event.wait(self.interval):
            try:
                with self.runtime.transaction() as session:
                    renewed = rows_changed(
                        session,
                        update(Job)
                        .where(
                            Job.id == self.job_id,
                            Job.run_token == self.token,
                            Job.state == JobState.running,
                        )
                        .values(lease_expires_at=utcnow() + lease),
                    )
            except Exception as error:  # the DB blipped; try again on the next beat
                logger.warning("heartbeat of job %s failed: %s", self.job_id, error)
                continue
            if not renewed:
                self.cancelled.set()
                self._stop_run()
                return

    def _stop_run(self) -> None:
        """Give the run function the grace period, then kill this pool process."""
        grace = self.runtime.settings.cancel_grace_seconds
        if self._stop_event.wait(grace) or not self.kill_on_stuck:
            return
        logger.warning("job %s did not stop within %.0fs of cancel: killing", self.job_id, grace)
        os.kill(os.getpid(), signal.SIGKILL)
