"""Schedule operations (API, CLI) and firing due schedules (beat).

Firing is exactly-once per due time without a lock: the job is submitted with the
idempotency key `schedule:<id>:<due time>` under the schedule owner's key, then
`next_run_at` is advanced with an UPDATE conditional on the due time it fired. Two beat
processes firing the same run get one job; a beat that dies between the two steps leaves
the run due, and the next tick finds the job already there and only advances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from submitter.db.models import ApiKey, Job, Schedule
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs import service as jobs
from submitter.jobs.states import ACTIVE
from submitter.runtime import Runtime
from submitter.schedules.schemas import ScheduleCreate, ScheduleUpdate
from submitter.schedules.timing import next_run
from submitter.security import BOOTSTRAP_ID

logger = logging.getLogger(__name__)

#: At most this many schedules are fired per beat tick; the rest are due at the next one.
FIRE_BATCH = 100


class ScheduleNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"schedule {ref} not found")


class ScheduleConflict(Exception):
    """A schedule with that name exists."""


def _check_job(
    runtime: Runtime, kind: str, spec: dict[str, Any], owner: str | None = None
) -> dict[str, Any]:
    """Validate the job request now, so a schedule that could never submit is refused with a
    422 naming the field, not discovered at 3 a.m. References are resolved and thrown away:
    they are resolved again at each run (`credit` = the latest version then)."""
    _, normalised = jobs.validate_request(kind, spec)
    with runtime.engine.connect() as connection:  # rolled back on exit: nothing is written
        if owner is not None:
            jobs.check_admitted(runtime, connection, kind, owner, ["body"])
        jobs.resolve_references(runtime, connection, kind, normalised)
    return normalised


def _next(schedule: Schedule, now: datetime, due: datetime | None = None) -> datetime | None:
    if not schedule.enabled:
        return None
    return next_run(
        cron=schedule.cron,
        interval_seconds=schedule.interval_seconds,
        timezone=schedule.timezone,
        due=due,
        now=now,
    )


def create(runtime: Runtime, body: ScheduleCreate, owner: str) -> Schedule:
    spec = _check_job(runtime, body.kind, body.spec, owner)
    now = utcnow()
    schedule = Schedule(
        id=jobs.new_id(),
        name=body.name,
        kind=body.kind,
        spec=spec,
        cron=body.cron,
        interval_seconds=body.interval_seconds,
        timezone=body.timezone or "UTC",
        enabled=body.enabled,
        allow_overlap=body.allow_overlap,
        owner=owner,
        created_at=now,
        updated_at=now,
        runs=0,
    )
    schedule.next_run_at = _next(schedule, now)
    try:
        with runtime.transaction() as session:
            session.add(schedule)
    except IntegrityError:
        raise ScheduleConflict(f"a schedule named {body.name!r} exists") from None
    return schedule


def _lookup(ref: str) -> Select[Schedule]:
    return select(Schedule).where(or_(Schedule.id == ref, Schedule.name == ref))


def get(runtime: Runtime, ref: str) -> Schedule:
    """A schedule by id or name."""
    with runtime.reads() as session:
        schedule = session.scalar(_lookup(ref))
    if schedule is None:
        raise ScheduleNotFound(ref)
    return schedule


def list_schedules(runtime: Runtime, *, limit: int, offset: int) -> tuple[list[Schedule], int]:
    with runtime.reads() as session:
        total = session.scalar(select(func.count()).select_from(Schedule)) or 0
        items = session.scalars(
            select(Schedule).order_by(Schedule.name).limit(limit).offset(offset)
        ).all()
    return list(items), total


def change(runtime: Runtime, ref: str, body: ScheduleUpdate) -> Schedule:
    """Apply the fields sent; the next run is recomputed when the timing or `enabled` moved."""
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "spec" in changes:
        changes["spec"] = _check_job(runtime, get(runtime, ref).kind, changes["spec"])
    now = utcnow()
    try:
        with runtime.transaction() as session:
            schedule = session.scalar(_lookup(ref))
            if schedule is None:
                raise ScheduleNotFound(ref)
            if "cron" in changes:
                schedule.interval_seconds = None
            if "interval_seconds" in changes:
                schedule.cron = None
            for name, value in changes.items():
                setattr(schedule, name, value)
            retime = {"cron", "interval_seconds", "timezone", "enabled"} & changes.keys()
            if retime:
                schedule.next_run_at = _next(schedule, now)
            schedule.updated_at = now
    except IntegrityError:
        raise ScheduleConflict(f"a schedule named {changes.get('name')!r} exists") from None
    return schedule


def delete(runtime: Runtime, ref: str) -> None:
    """Remove the schedule. Its jobs stay, still carrying its id."""
    with runtime.transaction() as session:
        schedule = session.scalar(_lookup(ref))
        if schedule is None:
            raise ScheduleNotFound(ref)
        session.delete(schedule)


def run_now(runtime: Runtime, ref: str) -> Job:
    """Submit the schedule's job at once (the regular rhythm is unchanged)."""
    schedule = get(runtime, ref)
    job, _ = jobs.submit(
        runtime,
        kind=schedule.kind,
        spec=schedule.spec,
        owner=schedule.owner,
        schedule_id=schedule.id,
    )
    with runtime.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id)
            .values(last_run_at=utcnow(), last_job_id=job.id, runs=Schedule.runs + 1)
        )
    return job


@dataclass
class FireReport:
    """What one beat tick did (for logs and tests)."""

    submitted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def fire_due(runtime: Runtime, now: datetime | None = None) -> FireReport:
    """Submit the job of every enabled schedule whose `next_run_at` has come (beat, each tick)."""
    now = now or utcnow()
    report = FireReport()
    with runtime.reads() as session:
        due = session.scalars(
            select(Schedule)
            .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
            .order_by(Schedule.next_run_at)
            .limit(FIRE_BATCH)
        ).all()
    for schedule in due:
        try:
            _fire(runtime, schedule, now, report)
        except Exception:  # one schedule must not hold up the others; it is due again
            logger.exception("schedule %s could not be fired", schedule.name)
    return report


def _fire(runtime: Runtime, schedule: Schedule, now: datetime, report: FireReport) -> None:
    due_at = schedule.next_run_at
    assert due_at is not None
    values: dict[str, Any] = {"next_run_at": _next(schedule, now, due=due_at), "last_run_at": now}
    problem = _why_not(runtime, schedule)
    if problem is not None:
        reason, disable = problem
        values["last_message"] = f"run due at {due_at.isoformat()} not submitted: {reason}"
        if disable:
            values.update(enabled=False, next_run_at=None)
        report.skipped.append(schedule.id)
    else:
        try:
            job, _ = jobs.submit(
                runtime,
                kind=schedule.kind,
                spec=schedule.spec,
                owner=schedule.owner,
                idempotency_key=f"schedule:{schedule.id}:{due_at.isoformat()}",
                schedule_id=schedule.id,
            )
        except jobs.InvalidJob as error:  # e.g. its dataset was deleted since
            values["last_message"] = f"run due at {due_at.isoformat()} refused: {error}"
            report.refused.append(schedule.id)
        except Exception as error:  # a kind's own check broke: skip the run, do not retry it
            logger.exception("schedule %s: submitting failed", schedule.name)
            values["last_message"] = (
                f"run due at {due_at.isoformat()} failed to submit: {type(error).__name__}: {error}"
            )
            report.refused.append(schedule.id)
        else:
            values.update(last_job_id=job.id, last_message=None, runs=Schedule.runs + 1)
            report.submitted.append(job.id)
    with runtime.transaction() as session:
        advanced = rows_changed(
            session,
            update(Schedule)
            .where(Schedule.id == schedule.id, Schedule.next_run_at == due_at)
            .values(**values),
        )
    if advanced and "last_message" in values and values["last_message"]:
        logger.warning("schedule %s: %s", schedule.name, values["last_message"])


def _why_not(runtime: Runtime, schedule: Schedule) -> tuple[str, bool] | None:
    """Why this run must not submit a job, and whether that disables the schedule; or None.

    A revoked API key disables its schedules: revoking a key must stop what it set going.
    """
    with runtime.reads() as session:
        if schedule.owner != BOOTSTRAP_ID:
            key = session.get(ApiKey, schedule.owner)
            if key is None or key.revoked_at is not None:
                return "the API key that created this schedule was revoked; disabled", True
        if not schedule.allow_overlap and schedule.last_job_id is not None:
            state = session.scalar(select(Job.state).where(Job.id == schedule.last_job_id))
            if state in {s.value for s in ACTIVE}:
                return f"the previous run, job {schedule.last_job_id}, is still {state}", False
    return None
