"""Job operations shared by the API, the CLI, the worker and the reconciler.

Rule of the house: a job is committed to the database *before* its message is sent. If the
send fails, the job stays `queued` with no `enqueued_at` and the reconciler sends it later,
so an accepted job is never lost.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from submitter.datasets.service import resolve_spec_datasets
from submitter.db.models import DatasetReference, Job, JobDependency, JobLog
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs.registry import get_kind
from submitter.jobs.states import ACTIVE, TERMINAL, JobState
from submitter.runtime import Runtime
from submitter.worker.dispatch import send_job

logger = logging.getLogger(__name__)


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class JobConflict(Exception):
    """The job is not in a state that allows the operation (e.g. cancel a finished job)."""


@dataclass
class InvalidJob(Exception):
    """A job request is invalid. `errors` are pydantic-style dicts with `loc` under the body."""

    errors: list[dict[str, Any]]

    def __str__(self) -> str:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in self.errors)


def new_id() -> str:
    return uuid.uuid4().hex


def add_log(session: Session, job_id: str, message: str, level: str = "INFO") -> None:
    session.add(JobLog(job_id=job_id, level=level, message=message))


def validate_request(kind: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check kind and spec; return the queue and the normalised spec (defaults filled in)."""
    try:
        job_kind = get_kind(kind)
    except LookupError as error:
        raise InvalidJob(
            [{"loc": ["body", "kind"], "msg": str(error), "type": "unknown_kind", "input": kind}]
        ) from None
    try:
        model = job_kind.spec_model.model_validate(spec)
    except ValidationError as error:
        raise InvalidJob(
            [
                {
                    "loc": ["body", "spec", *e["loc"]],
                    "msg": e["msg"],
                    "type": e["type"],
                    "input": e.get("input"),
                }
                for e in error.errors(include_url=False)
            ]
        ) from None
    return job_kind.queue, model.model_dump(mode="json")


def submit(
    runtime: Runtime,
    *,
    kind: str,
    spec: dict[str, Any],
    owner: str,
    depends_on: list[str] | None = None,
    idempotency_key: str | None = None,
    schedule_id: str | None = None,
) -> tuple[Job, bool]:
    """Create a job and enqueue it when it is ready. Return (job, created).

    The same `idempotency_key` from the same owner returns the first job (created=False).
    """
    queue, normalised = validate_request(kind, spec)
    depends_on = list(dict.fromkeys(depends_on or []))
    if idempotency_key is not None:
        existing = _find_idempotent(runtime, owner, idempotency_key)
        if existing is not None:
            return existing, False
    job_id = new_id()
    try:
        # Core, not the ORM unit of work: this is the API's hot path (bench/dispatch.py).
        with runtime.engine.begin() as connection:
            normalised, dataset_ids = resolve_references(runtime, connection, kind, normalised)
            dep_states = dependency_states(connection, depends_on)
            missing = [d for d in depends_on if d not in dep_states]
            if missing:
                raise InvalidJob(
                    [
                        {
                            "loc": ["body", "depends_on"],
                            "msg": f"unknown job id(s): {', '.join(missing)}",
                            "type": "unknown_job",
                            "input": missing,
                        }
                    ]
                )
            ready = all(state == JobState.succeeded for state in dep_states.values())
            now = utcnow()
            row: dict[str, Any] = {
                "id": job_id,
                "kind": kind,
                "queue": queue,
                "state": JobState.queued.value,
                "phase": None if ready else "waiting",
                "spec": normalised,
                "owner": owner,
                "idempotency_key": idempotency_key,
                "schedule_id": schedule_id,
                "attempts": 0,
                "max_attempts": runtime.settings.job_max_attempts,
                "created_at": now,
                # Optimistic: set before sending so a fast path costs one write. If the
                # send fails, the reconciler re-sends after `requeue_after_seconds`.
                "enqueued_at": now if ready else None,
            }
            connection.execute(insert(Job), row)
            if depends_on:
                connection.execute(
                    insert(JobDependency),
                    [{"job_id": job_id, "depends_on_id": d} for d in depends_on],
                )
            if dataset_ids:
                connection.execute(
                    insert(DatasetReference),
                    [{"job_id": job_id, "dataset_id": d} for d in dict.fromkeys(dataset_ids)],
                )
        job = Job(
            **row,
            dependencies=[JobDependency(job_id=job_id, depends_on_id=d) for d in depends_on],
        )
    except IntegrityError:
        # Two requests with one idempotency key raced; the other one won.
        if idempotency_key is None:
            raise
        existing = _find_idempotent(runtime, owner, idempotency_key)
        if existing is None:
            raise
        return existing, False
    if ready:
        _send(runtime, job_id, queue)
    else:
        resolve_waiting(runtime, [job_id])
        job = get_job(runtime, job_id)
    return job, True


def resolve_references(
    runtime: Runtime, connection: Connection, kind: str, normalised: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Pin the datasets and artifacts a validated spec names (`credit` → its latest version's
    id). Return the pinned spec and the dataset ids it reads; raise InvalidJob naming the
    field of a reference that does not resolve."""
    job_kind = get_kind(kind)
    dataset_ids: list[str] = []
    if job_kind.dataset_fields:
        normalised, dataset_ids, errors = resolve_spec_datasets(
            connection, job_kind.dataset_fields, normalised
        )
        if errors:
            raise InvalidJob(errors)
    if job_kind.resolve_spec is not None:
        normalised, more_ids, errors = job_kind.resolve_spec(runtime, connection, normalised)
        if errors:
            raise InvalidJob(errors)
        dataset_ids += more_ids
    return normalised, dataset_ids


def _find_idempotent(runtime: Runtime, owner: str, key: str) -> Job | None:
    with runtime.sessions() as session:
        return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def dependency_states(db: Session | Connection, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = db.execute(select(Job.id, Job.state).where(Job.id.in_(ids)))
    return {job_id: state for job_id, state in rows}


def _send(runtime: Runtime, job_id: str, queue: str) -> bool:
    try:
        send_job(runtime.celery, job_id, queue)
        return True
    except Exception as error:  # broker down: the reconciler will send it later
        logger.warning("could not enqueue job %s: %s", job_id, error, extra={"job_id": job_id})
        return False


def enqueue(runtime: Runtime, job_id: str, queue: str) -> bool:
    """Mark a queued job as enqueued now and send its message."""
    with runtime.transaction() as session:
        updated = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.queued)
            .values(enqueued_at=utcnow(), phase=None),
        )
    return bool(updated) and _send(runtime, job_id, queue)


#: The shortest prefix of a job id that is taken for the whole id (as git takes hashes).
MIN_ID_PREFIX = 8
_HEX = frozenset("0123456789abcdef")


class AmbiguousJobId(JobNotFound):
    """A prefix that matches more than one job."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        LookupError.__init__(
            self, f"job id prefix {prefix} matches {', '.join(matches)}…: give more characters"
        )
        self.job_id = prefix


def resolve_id(runtime: Runtime, ref: str) -> str:
    """The job id `ref` stands for: a whole id, or a unique prefix of 8 or more characters
    (ids are shown short where space is short, and people copy what they see)."""
    ref = ref.lower()
    if len(ref) >= 32 or len(ref) < MIN_ID_PREFIX or not _HEX.issuperset(ref):
        return ref
    with runtime.reads() as session:
        matches = list(
            session.scalars(select(Job.id).where(Job.id.startswith(ref)).order_by(Job.id).limit(3))
        )
    if not matches:
        raise JobNotFound(ref)
    if len(matches) > 1:
        raise AmbiguousJobId(ref, matches[:2])
    return matches[0]


def get_job(runtime: Runtime, job_id: str) -> Job:
    with runtime.reads() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job


def list_jobs(
    runtime: Runtime,
    *,
    state: str | None = None,
    kind: str | None = None,
    schedule_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    query = select(Job)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    if schedule_id:
        query = query.where(Job.schedule_id == schedule_id)
    with runtime.reads() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = session.scalars(
            query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
        ).all()
        return list(items), total


def job_logs(
    runtime: Runtime, job_id: str, *, after: int = 0, limit: int = 1000
) -> tuple[list[JobLog], int]:
    with runtime.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(job_id)
        total = session.scalar(select(func.count()).where(JobLog.job_id == job_id)) or 0
        lines = session.scalars(
            select(JobLog)
            .where(JobLog.job_id == job_id, JobLog.id > after)
            .order_by(JobLog.id)
            .limit(limit)
        ).all()
        return list(lines), total


def cancel(runtime: Runtime, job_id: str, by: str) -> Job:
    """Cancel a queued or running job.

    A queued job never starts (the runner claims only `queued` jobs). A running job is
    told through its heartbeat, which stops its run function (see worker.runner).
    """
    with runtime.transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        updated = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state.in_([s.value for s in ACTIVE]))
            .values(
                state=JobState.cancelled,
                finished_at=utcnow(),
                lease_expires_at=None,
                message=f"cancelled by {by}",
            ),
        )
        if not updated:
            session.refresh(job)
            raise JobConflict(f"job {job_id} is already {job.state}")
        add_log(session, job_id, f"cancelled by {by}")
    resolve_dependents(runtime, job_id)
    return get_job(runtime, job_id)


def resolve_dependents(runtime: Runtime, job_id: str) -> None:
    """After `job_id` ended: start, fail or cancel the jobs waiting on it."""
    with runtime.sessions() as session:
        dependents = list(
            session.scalars(
                select(JobDependency.job_id).where(JobDependency.depends_on_id == job_id)
            )
        )
    if dependents:
        resolve_waiting(runtime, dependents)


def resolve_waiting(runtime: Runtime, job_ids: list[str]) -> None:
    """Settle queued jobs whose dependencies have ended, cascading down the graph.

    All dependencies succeeded → enqueue. One failed → `failed`, one cancelled →
    `cancelled`, each with a message naming that dependency; then their own dependents.
    """
    pending = list(job_ids)
    while pending:
        job_id = pending.pop()
        with runtime.transaction() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.queued or not job.dependencies:
                continue
            states = dependency_states(session, job.depends_on)
            broken = next(
                (
                    (dep, states[dep])
                    for dep in job.depends_on
                    if states.get(dep) in (JobState.failed, JobState.cancelled)
                ),
                None,
            )
            if broken is None:
                if all(s == JobState.succeeded for s in states.values()) and (
                    job.enqueued_at is None
                ):
                    queue = job.queue
                else:
                    continue
            else:
                dep, dep_state = broken
                verb = "failed" if dep_state == JobState.failed else "was cancelled"
                new_state = JobState.failed if dep_state == JobState.failed else JobState.cancelled
                text = f"dependency {dep} {verb}"
                updated = rows_changed(
                    session,
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.queued)
                    .values(
                        state=new_state,
                        phase=None,
                        finished_at=utcnow(),
                        message=text,
                        error=text if new_state == JobState.failed else None,
                    ),
                )
                if updated:
                    add_log(session, job_id, text, "WARNING")
                    pending.extend(
                        session.scalars(
                            select(JobDependency.job_id).where(
                                JobDependency.depends_on_id == job_id
                            )
                        )
                    )
                continue
        enqueue(runtime, job_id, queue)


def is_terminal(state: str) -> bool:
    return state in TERMINAL
