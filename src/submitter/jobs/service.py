"""Job operations shared by the API, the CLI, the worker and the reconciler.

Rule of the house: a job is committed to the database *before* its message is sent. If the
send fails, the job stays `queued` with no `enqueued_at` and the reconciler sends it later,
so an accepted job is never lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
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
from submitter.jobs.schemas import MAX_BATCH, JobCreate
from submitter.jobs.states import ACTIVE, TERMINAL, JobState
from submitter.runtime import Runtime
from submitter.sweeps import service as sweeps
from submitter.worker.dispatch import send_jobs

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
    return _validate(kind, spec, ["body"])


def _validate(kind: str, spec: dict[str, Any], at: list[Any]) -> tuple[str, dict[str, Any]]:
    """`validate_request` with the errors' `loc` under `at` (`body`, or one job of a batch)."""
    try:
        job_kind = get_kind(kind)
    except LookupError as error:
        raise InvalidJob(
            [{"loc": [*at, "kind"], "msg": str(error), "type": "unknown_kind", "input": kind}]
        ) from None
    try:
        model = job_kind.spec_model.model_validate(spec)
    except ValidationError as error:
        raise InvalidJob(
            [
                {
                    "loc": [*at, "spec", *e["loc"]],
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
    One job is a batch of one: the same checks, the same insert, errors under `body`;
    concurrent submissions share a transaction and a publish (jobs.coalesce).
    A kind whose submission makes more rows (a sweep and its children) creates them itself.
    """
    create = _creator(kind)
    if create is not None:
        return create(  # type: ignore[no-any-return]
            runtime,
            spec=spec,
            owner=owner,
            depends_on=depends_on,
            idempotency_key=idempotency_key,
            schedule_id=schedule_id,
        )
    request = JobCreate(
        kind=kind, spec=spec, depends_on=depends_on or [], idempotency_key=idempotency_key
    )
    from submitter.jobs.coalesce import coalescer

    return coalescer(runtime).submit(owner, request, schedule_id)


async def submit_async(runtime: Runtime, owner: str, request: JobCreate) -> tuple[Job, bool]:
    """`submit` for the API's event loop, of a request as the route validated it: the
    coalescer stores it without a thread of its own (jobs.coalesce); a kind that makes
    its own rows (a sweep) is created in the loop's thread pool."""
    if _creator(request.kind) is not None:
        create = functools.partial(
            submit,
            runtime,
            kind=request.kind,
            spec=request.spec,
            owner=owner,
            depends_on=request.depends_on,
            idempotency_key=request.idempotency_key,
        )
        return await asyncio.get_running_loop().run_in_executor(None, create)
    from submitter.jobs.coalesce import coalescer

    return await coalescer(runtime).submit_async(owner, request)


def _creator(kind: str) -> Any:
    try:
        return get_kind(kind).create
    except LookupError:
        return None  # validation says why


#: In a batch, `depends_on: ["#2"]` names the batch's job at index 2 (an earlier one).
POSITION_PREFIX = "#"


def _batch_loc(index: int) -> list[Any]:
    return ["body", "jobs", index]


@dataclass
class Batch:
    """Jobs inserted by `insert_jobs`, in request order, and what is due after the commit."""

    jobs: list[Job]
    created: list[bool]
    #: (job id, queue) of the new jobs that are ready: their messages go out after commit.
    ready: list[tuple[str, str]]
    #: Existing jobs new ones wait on that had not succeeded when they were read: checked
    #: again after commit, as they may have ended meanwhile (see `after_commit`).
    watched: dict[str, list[str]]
    #: The smallest `group` of the new jobs' kinds: at most so many share a message.
    group_limit: int = 1

    def group(self) -> int:
        """Jobs per broker message of this batch's ready jobs (see `per_message`)."""
        return per_message(self.group_limit, len(self.ready), spread=8)


def per_message(limit: int, ready: int, spread: int) -> int:
    """Jobs per broker message (dispatch.send_jobs): at most `limit` (the smallest `group`
    of their kinds), and few enough that `ready` jobs still make `spread` messages to
    spread over workers."""
    return max(1, min(limit, -(-ready // spread)))


def submit_many(
    runtime: Runtime,
    owner: str,
    requests: Sequence[JobCreate],
    *,
    schedule_id: str | None = None,
    columns: Mapping[str, Any] | None = None,
    at: Callable[[int], list[Any]] = _batch_loc,
) -> list[tuple[Job, bool]]:
    """Create many jobs in one transaction and publish the ready ones together; return
    (job, created) per request, in order.

    All or nothing: every request is checked, and if any is invalid InvalidJob lists the
    errors of all of them (`loc` under `at(index)`, `["body", "jobs", i]` by default) and
    nothing is stored. `depends_on` takes job ids and, within the batch, `"#i"` for the
    request at index i, which must come earlier (so a batch cannot hold a cycle). A
    request whose `idempotency_key` this owner used before returns that job (created
    False); a key repeated within the batch is one job. `columns` are extra column values
    for every new row (for services that create jobs of their own, e.g. a parent's id).

    Services that need the jobs inserted in their own transaction call `insert_jobs`,
    then `after_commit` once it committed.
    """
    for attempt in range(2):
        try:
            with runtime.engine.begin() as connection:
                batch = insert_jobs(
                    runtime,
                    connection,
                    owner,
                    requests,
                    schedule_id=schedule_id,
                    columns=columns,
                    at=at,
                )
            break
        except IntegrityError:
            # Two requests with one idempotency key raced and the other one won: the
            # second pass finds its job (and raises again if that was not the cause).
            if attempt or not any(r.idempotency_key for r in requests):
                raise
    return after_commit(runtime, batch)


def insert_jobs(
    runtime: Runtime,
    connection: Connection,
    owner: str,
    requests: Sequence[JobCreate],
    *,
    schedule_id: str | None = None,
    columns: Mapping[str, Any] | None = None,
    at: Callable[[int], list[Any]] = _batch_loc,
    parents: bool = False,
) -> Batch:
    """Check and insert jobs in the caller's transaction (see `submit_many`); raise
    InvalidJob before inserting anything (`parents`: the caller is the service of a kind
    that makes jobs of its own, e.g. sweeps, inserting its parent). Call `after_commit`
    with the result once the transaction committed: nothing is published before (a
    message must never name a row that might still roll back)."""
    if len(requests) > MAX_BATCH:
        raise InvalidJob(
            [
                {
                    "loc": ["body", "jobs"],
                    "msg": f"at most {MAX_BATCH} jobs in one batch, got {len(requests)}",
                    "type": "too_long",
                    "input": len(requests),
                }
            ]
        )
    errors: list[dict[str, Any]] = []
    keys = [r.idempotency_key for r in requests if r.idempotency_key is not None]
    existing = _find_idempotent_many(connection, owner, keys) if keys else {}
    # Pass 1: validate, pin references, give each request its job id (or its earlier job).
    prepared: list[tuple[str, dict[str, Any], list[str]] | None] = []
    ids: list[str] = []
    first_of_key: dict[str, str] = {}
    for index, request in enumerate(requests):
        where = at(index)
        key = request.idempotency_key
        try:
            if not parents and _creator(request.kind) is not None:
                raise InvalidJob(
                    [
                        {
                            "loc": [*where, "kind"],
                            "msg": f"a {request.kind} makes jobs of its own: submit it "
                            "alone (POST /api/v1/jobs)",
                            "type": "not_in_batch",
                            "input": request.kind,
                        }
                    ]
                )
            queue, normalised = _validate(request.kind, request.spec, where)
            check_admitted(runtime, connection, request.kind, owner, where)
            normalised, dataset_ids = _resolve_at(
                runtime, connection, request.kind, normalised, where
            )
        except InvalidJob as invalid:
            errors.extend(invalid.errors)
            prepared.append(None)
            ids.append("")
            continue
        if key is not None and key in existing:
            ids.append(existing[key].id)
            prepared.append(None)
        elif key is not None and key in first_of_key:
            ids.append(first_of_key[key])
            prepared.append(None)
        else:
            job_id = new_id()
            if key is not None:
                first_of_key[key] = job_id
            ids.append(job_id)
            prepared.append((queue, normalised, dataset_ids))
    # Pass 2: dependencies, by id or by earlier position.
    new_ids = {ids[i] for i, item in enumerate(prepared) if item is not None}
    depends: list[list[str]] = []
    for index, request in enumerate(requests):
        resolved: list[str] = []
        for position, ref in enumerate(request.depends_on):
            if not ref.startswith(POSITION_PREFIX):
                resolved.append(ref)
                continue
            target = _position(ref, index)
            if isinstance(target, str):
                errors.append(
                    {
                        "loc": [*at(index), "depends_on", position],
                        "msg": target,
                        "type": "bad_position",
                        "input": ref,
                    }
                )
            elif ids[target]:
                resolved.append(ids[target])
        depends.append(list(dict.fromkeys(resolved)))
    outside = sorted({d for deps in depends for d in deps if d not in new_ids})
    states = dependency_states(connection, outside)
    for index, request in enumerate(requests):
        missing = [
            d for d in request.depends_on if not d.startswith(POSITION_PREFIX) and d not in states
        ]
        if missing and prepared[index] is not None:
            errors.append(
                {
                    "loc": [*at(index), "depends_on"],
                    "msg": f"unknown job id(s): {', '.join(missing)}",
                    "type": "unknown_job",
                    "input": missing,
                }
            )
    if errors:
        raise InvalidJob(errors)
    # Pass 3: the rows, in one INSERT per table.
    now = utcnow()
    rows: list[dict[str, Any]] = []
    dependency_rows: list[dict[str, str]] = []
    reference_rows: list[dict[str, str]] = []
    ready: list[tuple[str, str]] = []
    watched: dict[str, list[str]] = {}
    jobs: list[Job] = []
    created: list[bool] = []
    by_id: dict[str, Job] = {job.id: job for job in existing.values()}
    for index, request in enumerate(requests):
        job_id = ids[index]
        item = prepared[index]
        if item is None:  # an earlier job: by idempotency key, here or before
            jobs.append(by_id[job_id])
            created.append(False)
            continue
        queue, normalised, dataset_ids = item
        deps = depends[index]
        is_ready = all(d not in new_ids and states[d] == JobState.succeeded for d in deps)
        row: dict[str, Any] = {
            "id": job_id,
            "kind": request.kind,
            "queue": queue,
            "state": JobState.queued.value,
            "phase": None if is_ready else "waiting",
            "spec": normalised,
            "owner": owner,
            "idempotency_key": request.idempotency_key,
            "schedule_id": schedule_id,
            "attempts": 0,
            "max_attempts": runtime.settings.job_max_attempts,
            "created_at": now,
            # Optimistic: set before sending so a fast path costs one write. If the send
            # fails, the reconciler re-sends after `requeue_after_seconds`.
            "enqueued_at": now if is_ready else None,
            **(columns or {}),
        }
        rows.append(row)
        dependency_rows += [{"job_id": job_id, "depends_on_id": d} for d in deps]
        reference_rows += [{"job_id": job_id, "dataset_id": d} for d in dict.fromkeys(dataset_ids)]
        if is_ready:
            ready.append((job_id, queue))
        for d in deps:
            if d not in new_ids and states[d] != JobState.succeeded:
                watched.setdefault(d, []).append(job_id)
        job = Job(
            **row,
            dependencies=[JobDependency(job_id=job_id, depends_on_id=d) for d in deps],
        )
        by_id[job_id] = job
        jobs.append(job)
        created.append(True)
    if rows:
        connection.execute(insert(Job), rows)
    if dependency_rows:
        connection.execute(insert(JobDependency), dependency_rows)
    if reference_rows:
        connection.execute(insert(DatasetReference), reference_rows)
    kinds = {request.kind for request, item in zip(requests, prepared, strict=True) if item}
    limit = min((get_kind(kind).group for kind in kinds), default=1)
    return Batch(jobs=jobs, created=created, ready=ready, watched=watched, group_limit=limit)


def store_together(
    runtime: Runtime, requests: Sequence[tuple[str, JobCreate, str | None]]
) -> list[tuple[Job, bool]]:
    """Single submissions of several callers, (owner, request, schedule id) each, in one
    transaction and one publish (jobs.coalesce); (job, created) per request, in order.
    Raises what `insert_jobs` raises for any of them: the caller then stores each alone."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for index, (owner, _, schedule_id) in enumerate(requests):
        groups.setdefault((owner, schedule_id), []).append(index)
    answers: dict[int, tuple[Job, bool]] = {}
    with runtime.engine.begin() as connection:
        batches = [
            (
                indexes,
                insert_jobs(
                    runtime,
                    connection,
                    owner,
                    [requests[i][1] for i in indexes],
                    schedule_id=schedule_id,
                ),
            )
            for (owner, schedule_id), indexes in groups.items()
        ]
    # One publish for all, each message as many jobs as the kinds allow (spread 1): these
    # are the jobs that were waiting together, and the next group gathers while a worker
    # runs this one, so pool processes stay busy; splitting a group would only add
    # messages, claims and commits (spread 2 cost a quarter more worker CPU per echo job
    # in bench/dispatch.py, and p50 submit-to-start 300-560 ms against 20-40).
    ready = [pair for _, batch in batches for pair in batch.ready]
    limit = min((batch.group_limit for _, batch in batches), default=1)
    publish(runtime, ready, group=per_message(limit, len(ready), spread=1))
    for indexes, batch in batches:
        batch.ready = []  # published above
        for index, answer in zip(indexes, after_commit(runtime, batch), strict=True):
            answers[index] = answer
    return [answers[index] for index in range(len(requests))]


def after_commit(runtime: Runtime, batch: Batch) -> list[tuple[Job, bool]]:
    """Publish the ready jobs of a committed batch, settle the ones whose dependency
    ended meanwhile, and return (job, created) per request."""
    publish(runtime, batch.ready, group=batch.group())
    jobs = batch.jobs
    if batch.watched:
        # A dependency that ended between our read and our commit did not see the new
        # rows (or had failed already): settle its dependents now, then show them as
        # they are. The reconciler is the safety net behind this.
        with runtime.engine.connect() as connection:
            states = dependency_states(connection, list(batch.watched))
        settle = [j for d, s in states.items() if s in TERMINAL for j in batch.watched[d]]
        if settle:
            resolve_waiting(runtime, list(dict.fromkeys(settle)))
            fresh = _get_jobs(runtime, settle)
            for job in jobs:  # the rows come back in the table's order; keep the request's
                if job.id in fresh:
                    order = {d: i for i, d in enumerate(job.depends_on)}
                    fresh[job.id].dependencies.sort(key=lambda d: order[d.depends_on_id])
            jobs = [fresh.get(job.id, job) for job in jobs]
    return list(zip(jobs, batch.created, strict=True))


def _position(ref: str, index: int) -> int | str:
    """The batch index `#i` names, or why it names none (only earlier jobs)."""
    text = ref.removeprefix(POSITION_PREFIX)
    if not text.isdecimal():
        return f"{ref!r} is not a batch position: write #0, #1, ... (an earlier job's index)"
    target = int(text)
    if target < index:
        return target
    earlier = f"#0 to #{index - 1}" if index else "none: this is the batch's first job"
    return (
        f"{ref!r} does not name an earlier job of this batch (jobs may depend only on "
        f"earlier ones, so a batch has no cycle; here: {earlier})"
    )


def check_admitted(
    runtime: Runtime, connection: Connection, kind: str, owner: str, at: list[Any]
) -> None:
    """Raise InvalidJob (under `kind`) if the kind does not admit this owner now."""
    admit = get_kind(kind).admit
    why = admit(runtime, connection, owner) if admit is not None else None
    if why is not None:
        loc = [*at, "kind"]
        raise InvalidJob([{"loc": loc, "msg": why, "type": "kind_not_admitted", "input": kind}])


def _resolve_at(
    runtime: Runtime, connection: Connection, kind: str, normalised: dict[str, Any], at: list[Any]
) -> tuple[dict[str, Any], list[str]]:
    """`resolve_references` with its errors' `loc` moved under `at`."""
    try:
        return resolve_references(runtime, connection, kind, normalised)
    except InvalidJob as invalid:
        if at == ["body"]:
            raise
        raise InvalidJob([{**e, "loc": [*at, *e["loc"][1:]]} for e in invalid.errors]) from None


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


def _find_idempotent_many(connection: Connection, owner: str, keys: list[str]) -> dict[str, Job]:
    """The owner's jobs with these idempotency keys, by key."""
    with Session(bind=connection) as session:
        found = session.scalars(
            select(Job).where(Job.owner == owner, Job.idempotency_key.in_(set(keys)))
        ).all()
        for job in found:
            job.dependencies  # noqa: B018 (loaded now, while the session is open)
        session.expunge_all()
    return {job.idempotency_key: job for job in found if job.idempotency_key}


def _get_jobs(runtime: Runtime, ids: list[str]) -> dict[str, Job]:
    with runtime.reads() as session:
        return {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}


def dependency_states(db: Session | Connection, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = db.execute(select(Job.id, Job.state).where(Job.id.in_(ids)))
    return {job_id: state for job_id, state in rows}


def _send(runtime: Runtime, job_id: str, queue: str) -> bool:
    return publish(runtime, [(job_id, queue)])


def publish(runtime: Runtime, jobs: Sequence[tuple[str, str]], group: int = 1) -> bool:
    """Send the messages of these (job id, queue) pairs over one broker connection; True
    if all went out. A failure is logged, not raised: the jobs are committed, and the
    reconciler re-sends those that did not start within `requeue_after_seconds`."""
    if not jobs:
        return True
    try:
        send_jobs(runtime.celery, jobs, group)
        return True
    except Exception as error:  # broker down: the reconciler will send them later
        first = jobs[0][0]
        logger.warning(
            "could not enqueue %d job(s) (%s...): %s",
            len(jobs),
            first,
            error,
            extra={"job_id": first},
        )
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
        if job.kind == sweeps.KIND:
            cancelled = sweeps.cancel_children(session, job_id, by)
            add_log(session, job_id, f"cancelled {cancelled} child job(s) that had not ended")
    resolve_dependents(runtime, job_id)
    sweeps.child_ended(runtime, job_id)
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
