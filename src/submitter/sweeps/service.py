"""A sweep's life: its children are created with it, released within `max_parallel`, and
the parent ends when the last child did.

    submit  → parent `queued`, children `queued` in phase `held` (no message yet)
    parent runs on a worker → children released (or, for SLURM, one job array) → parent
              handed off in phase `children`
    a child ends → the next held ones are released; the last one settles the parent:
              `succeeded` when all did, else `failed` naming how many failed

`max_parallel` is enforced where jobs are claimed (submitter.worker.runner: the claim of a
child counts its running siblings with the parent's row locked), so it holds with any
number of workers; releasing here only keeps the held children from all queuing at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from submitter.db.models import Job
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs.states import JobState
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

KIND = "sweep"
#: A child waiting for its sweep to release it (not sent; the reconciler leaves it alone).
HELD = "held"
#: The parent's phase while its children run.
CHILDREN = "children"
#: A sweep makes at most this many children (one per combination of its matrix).
MAX_CHILDREN = 1000


def create(
    runtime: Runtime,
    *,
    spec: dict[str, Any],
    owner: str,
    depends_on: list[str] | None = None,
    idempotency_key: str | None = None,
    schedule_id: str | None = None,
) -> tuple[Job, bool]:
    """Check every combination and store the sweep with all its children, in one
    transaction; the parent is queued (its run releases the children), the children held.

    A combination whose filled spec is invalid makes the whole request a 422 naming that
    combination: nothing is stored."""
    from submitter.jobs import service as jobs
    from submitter.jobs.schemas import JobCreate
    from submitter.sweeps.matrix import combinations, fill, label

    _, normalised = jobs.validate_request(KIND, spec)
    child_kind = normalised["kind"]
    combos = combinations(normalised["matrix"])
    children: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    for index, params in enumerate(combos):
        try:
            filled = fill(normalised["spec"], params)
            child_queue, _ = jobs.validate_request(child_kind, filled)
            children.append((child_queue, filled))
        except jobs.InvalidJob as invalid:
            for error in invalid.errors:
                where = error["loc"][1:]  # ["body", "spec", ...] or ["body", "kind"]
                loc = (
                    ["body", "spec", "spec", *where[1:]]
                    if where[:1] == ["spec"]
                    else [
                        "body",
                        "spec",
                        "kind",
                    ]
                )
                errors.append(
                    {
                        **error,
                        "loc": loc,
                        "msg": f"combination {index} ({label(params)}): {error['msg']}",
                    }
                )
            if len(errors) >= 20:
                break
    if errors:
        raise jobs.InvalidJob(errors)
    queue = children[0][0]  # the parent runs where its children do (SLURM: an hpc worker)
    parent_request = JobCreate(
        kind=KIND, spec=spec, depends_on=depends_on or [], idempotency_key=idempotency_key
    )
    child_requests = [JobCreate(kind=child_kind, spec=child_spec) for _, child_spec in children]
    for attempt in range(2):
        try:
            with runtime.engine.begin() as connection:
                parent = jobs.insert_jobs(
                    runtime,
                    connection,
                    owner,
                    [parent_request],
                    schedule_id=schedule_id,
                    columns={"queue": queue, "max_parallel": normalised.get("max_parallel")},
                    at=lambda _: ["body"],
                    parents=True,
                )
                if not parent.created[0]:  # this idempotency key made a sweep before
                    return parent.jobs[0], False
                parent.ready = [(job_id, queue) for job_id, _ in parent.ready]
                batch = jobs.insert_jobs(
                    runtime,
                    connection,
                    owner,
                    child_requests,
                    schedule_id=schedule_id,
                    columns={"parent_id": parent.jobs[0].id, "phase": HELD, "enqueued_at": None},
                    at=lambda _: ["body", "spec"],
                )
                connection.execute(
                    update(Job)
                    .where(Job.id == bindparam("b_id"))
                    .values(sweep_index=bindparam("b_index")),
                    [{"b_id": job.id, "b_index": i} for i, job in enumerate(batch.jobs)],
                )
            break
        except IntegrityError:
            # Two requests with one idempotency key raced; the second pass finds the other.
            if attempt or idempotency_key is None:
                raise
    [(job, created)] = jobs.after_commit(runtime, parent)  # children wait, held
    return job, created


def lock_parent(connection: Connection | Session, parent_id: str) -> None:
    """Serialise claims and releases of one sweep's children (PostgreSQL: the parent's row
    lock; SQLite writers are serialised already, FOR UPDATE is dropped there)."""
    connection.execute(select(Job.id).where(Job.id == parent_id).with_for_update())


def release_children(runtime: Runtime, parent_id: str, *, handed_off: bool = False) -> list[str]:
    """Send the oldest held children, as many as `max_parallel` leaves room for.

    `handed_off`: only if the parent's own run is over (phase `children`). The reconciler's
    safety net asks so: while a SLURM sweep's run stages its array, its children are held
    on purpose, and one released then would run as a single job beside the array."""
    from submitter.jobs.service import publish

    now = utcnow()
    with runtime.engine.begin() as connection:
        lock_parent(connection, parent_id)
        parent = connection.execute(
            select(Job.state, Job.phase, Job.max_parallel).where(Job.id == parent_id)
        ).one_or_none()
        if parent is None or parent.state != JobState.running:
            return []
        if handed_off and parent.phase != CHILDREN:
            return []
        limit = parent.max_parallel
        query = (
            select(Job.id, Job.queue)
            .where(Job.parent_id == parent_id, Job.state == JobState.queued, Job.phase == HELD)
            .order_by(Job.created_at, Job.id)
        )
        if limit is not None:
            busy = connection.scalar(
                select(func.count()).where(
                    Job.parent_id == parent_id,
                    (Job.state == JobState.running)
                    | ((Job.state == JobState.queued) & Job.phase.is_(None)),
                )
            )
            free = limit - (busy or 0)
            if free <= 0:
                return []
            query = query.limit(free)
        chosen = connection.execute(query).all()
        if not chosen:
            return []
        connection.execute(
            update(Job)
            .where(Job.id.in_([c.id for c in chosen]), Job.phase == HELD)
            .values(phase=None, enqueued_at=now)
        )
    publish(runtime, [(c.id, c.queue) for c in chosen])
    return [c.id for c in chosen]


def child_ended(runtime: Runtime, child_id: str, parent_id: str | None = None) -> None:
    """After a child ended: release the next held siblings, settle the parent if done.
    `parent_id`, when the caller knows it (the worker's claim returned it), saves a read."""
    if parent_id is None:
        with runtime.reads() as session:
            parent_id = session.scalar(select(Job.parent_id).where(Job.id == child_id))
    if parent_id is None:
        return
    release_children(runtime, parent_id)
    settle(runtime, parent_id)


def child_counts(db: Connection | Session, parent_id: str) -> Counter[str]:
    rows = db.execute(
        select(Job.state, func.count()).where(Job.parent_id == parent_id).group_by(Job.state)
    ).all()
    return Counter({state: count for state, count in rows})


def settle(runtime: Runtime, parent_id: str) -> bool:
    """End a running sweep whose children all ended; True if this call ended it."""
    from submitter.jobs.service import add_log

    with runtime.transaction() as session:
        counts = child_counts(session, parent_id)
        total = sum(counts.values())
        if not total or counts[JobState.queued] or counts[JobState.running]:
            return False
        failed, cancelled = counts[JobState.failed], counts[JobState.cancelled]
        summary = {
            "children": total,
            "succeeded": counts[JobState.succeeded],
            "failed": failed,
            "cancelled": cancelled,
        }
        if failed or cancelled:
            state = JobState.failed
            parts = [f"{failed} of {total} children failed"]
            if cancelled:
                parts.append(f"{cancelled} cancelled")
            text = ", ".join(parts)
        else:
            state, text = JobState.succeeded, f"all {total} children succeeded"
        ended = rows_changed(
            session,
            update(Job)
            .where(Job.id == parent_id, Job.state == JobState.running)
            .values(
                state=state,
                phase=None,
                progress=1.0,
                result=summary,
                message=text,
                error=text if state == JobState.failed else None,
                finished_at=utcnow(),
                lease_expires_at=None,
                run_token=None,
            ),
        )
        if ended:
            add_log(session, parent_id, f"sweep ended: {text}", "INFO")
    if ended:
        from submitter.jobs.service import resolve_dependents

        resolve_dependents(runtime, parent_id)
    return bool(ended)


def cancel_children(session: Session, parent_id: str, by: str) -> int:
    """Cancel a cancelled sweep's children that have not ended (in the caller's
    transaction). Running ones stop through their heartbeat; SLURM ones are scancelled by
    the HPC monitor, as any cancelled SLURM job."""
    text = f"cancelled with its sweep {parent_id} by {by}"
    return rows_changed(
        session,
        update(Job)
        .where(Job.parent_id == parent_id, Job.state.in_([JobState.queued, JobState.running]))
        .values(
            state=JobState.cancelled,
            finished_at=utcnow(),
            lease_expires_at=None,
            message=text,
        ),
    )


def unsettled_parents(runtime: Runtime, limit: int = 100) -> list[str]:
    """Running sweeps with no active child left (their last child's settle was missed)."""
    child = aliased(Job)
    with runtime.reads() as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(
                    Job.kind == KIND,
                    Job.state == JobState.running,
                    Job.phase == CHILDREN,
                    ~select(child.id)
                    .where(
                        child.parent_id == Job.id,
                        child.state.in_([JobState.queued, JobState.running]),
                    )
                    .exists(),
                )
                .limit(limit)
            )
        )


def table(runtime: Runtime, parent_id: str, best_by: str | None = None) -> dict[str, Any]:
    """The children side by side: parameters, state, result values and last metrics,
    sorted by `best_by` (a result or metric name; `-name` for lower is better)."""
    from submitter.sweeps.results import compare

    with runtime.reads() as session:
        parent = session.get(Job, parent_id)
        if parent is None or parent.kind != KIND:
            from submitter.jobs.service import JobNotFound

            raise JobNotFound(parent_id)
        children = session.execute(
            select(Job.id, Job.sweep_index, Job.state, Job.message, Job.result, Job.external_id)
            .where(Job.parent_id == parent_id)
            .order_by(Job.sweep_index)
        ).all()
    return compare(runtime, parent, children, best_by)
