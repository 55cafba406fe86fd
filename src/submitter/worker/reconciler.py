"""The reconciler: makes the database and the broker agree again after a loss.

Runs as a beat task and once when a worker starts. Every change is a conditional update,
so two reconcilers (or a reconciler and a worker) racing each other do no harm; the worst
case is a duplicate message, which the runner drops at claim.

1. `running` jobs whose lease expired (their worker died): back to `queued` and re-sent,
   or `failed` once `max_attempts` runs were lost.
2. `queued`, ready jobs whose message was sent more than `requeue_after_seconds` ago (or
   never: the broker was down at submit) and which still did not start: re-sent. The broker
   lost the message (restart, purge) or it sits behind a long backlog; re-sending is safe.
3. `queued` jobs waiting on dependencies that have ended: settled (enqueue/fail/cancel).
4. sweeps: held children released within `max_parallel`, finished sweeps settled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update

from submitter.db.models import Job, JobDependency
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs.service import add_log, enqueue, resolve_dependents, resolve_waiting
from submitter.jobs.states import TERMINAL, JobState
from submitter.runtime import Runtime
from submitter.sweeps import service as sweeps

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class ReconcileReport:
    requeued_lost: list[str] = field(default_factory=list)
    failed_lost: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    settled_waiting: int = 0

    def __bool__(self) -> bool:
        return bool(self.requeued_lost or self.failed_lost or self.resent or self.settled_waiting)


def reconcile(runtime: Runtime) -> ReconcileReport:
    report = ReconcileReport()
    _recover_lost_runs(runtime, report)
    _resend_stale(runtime, report)
    _settle_waiting(runtime, report)
    _settle_sweeps(runtime, report)
    if report:
        logger.info(
            "reconciled: %d lost runs requeued, %d failed after max attempts, "
            "%d messages re-sent, %d waiting jobs checked",
            len(report.requeued_lost),
            len(report.failed_lost),
            len(report.resent),
            report.settled_waiting,
        )
    return report


def _recover_lost_runs(runtime: Runtime, report: ReconcileReport) -> None:
    now = utcnow()
    with runtime.sessions() as session:
        lost = session.execute(
            select(Job.id, Job.run_token, Job.attempts, Job.max_attempts, Job.worker, Job.queue)
            .where(Job.state == JobState.running, Job.lease_expires_at < now)
            .limit(BATCH)
        ).all()
    for job_id, token, attempts, max_attempts, worker, queue in lost:
        exhausted = attempts >= max_attempts
        with runtime.transaction() as session:
            values: dict[str, object] = {"lease_expires_at": None, "run_token": None}
            if exhausted:
                text = f"worker lost {attempts} times (last on {worker}); giving up"
                values.update(state=JobState.failed, error=text, message=text, finished_at=now)
            else:
                text = f"worker {worker} lost the job (attempt {attempts}); requeued"
                values.update(state=JobState.queued, enqueued_at=now, message=text)
            changed = rows_changed(
                session,
                update(Job)
                .where(Job.id == job_id, Job.run_token == token, Job.state == JobState.running)
                .values(**values),
            )
            if changed:
                add_log(session, job_id, text, "WARNING")
        if not changed:
            continue
        if exhausted:
            report.failed_lost.append(job_id)
            resolve_dependents(runtime, job_id)
        else:
            report.requeued_lost.append(job_id)
            from submitter.worker.dispatch import send_job

            try:
                send_job(runtime.celery, job_id, queue)
            except Exception as error:
                logger.warning("re-send of job %s failed: %s", job_id, error)


def _resend_stale(runtime: Runtime, report: ReconcileReport) -> None:
    cutoff = utcnow() - timedelta(seconds=runtime.settings.requeue_after_seconds)
    waiting_on_deps = (
        select(JobDependency.job_id)
        .join(Job, Job.id == JobDependency.depends_on_id)
        .where(Job.state != JobState.succeeded)
    )
    with runtime.sessions() as session:
        stale = session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.state == JobState.queued,
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
                # A sweep's held child waits for its sweep to release it (max_parallel).
                or_(Job.phase.is_(None), Job.phase != sweeps.HELD),
                Job.id.not_in(waiting_on_deps),
            )
            .order_by(Job.created_at)
            .limit(BATCH)
        ).all()
    for job_id, queue in stale:
        if enqueue(runtime, job_id, queue):
            report.resent.append(job_id)


def _settle_waiting(runtime: Runtime, report: ReconcileReport) -> None:
    """Safety net for dependents whose trigger was missed (a worker died right after finishing)."""
    finished_dep = (
        select(JobDependency.job_id)
        .join(Job, Job.id == JobDependency.depends_on_id)
        .where(Job.state.in_([s.value for s in TERMINAL]))
    )
    with runtime.sessions() as session:
        ids = list(
            session.scalars(
                select(Job.id)
                .where(
                    Job.state == JobState.queued,
                    Job.enqueued_at.is_(None),
                    Job.id.in_(finished_dep),
                )
                .limit(BATCH)
            )
        )
    if ids:
        resolve_waiting(runtime, ids)
        report.settled_waiting = len(ids)


def _settle_sweeps(runtime: Runtime, report: ReconcileReport) -> None:
    """Safety net for sweeps: release held children a missed release left waiting, and end
    sweeps whose last child's settle was missed (a worker died right after finishing)."""
    with runtime.sessions() as session:
        parents = list(
            session.scalars(
                select(Job.parent_id)
                .where(Job.state == JobState.queued, Job.phase == sweeps.HELD)
                .distinct()
                .limit(BATCH)
            )
        )
    for parent_id in parents:
        if parent_id is not None:
            report.resent += sweeps.release_children(runtime, parent_id, handed_off=True)
    for parent_id in sweeps.unsettled_parents(runtime):
        if sweeps.settle(runtime, parent_id):
            report.settled_waiting += 1
