"""Running one job on a worker: claim, heartbeat, run, record. Read top to bottom.

Exactly-once completion rests on two conditional updates:

1. *claim*: `queued → running` only if the row is still `queued` and every dependency
   has succeeded; it sets a fresh `run_token` and a lease. A redelivered or duplicate
   message finds the job `running` or finished and is dropped.
2. *finish*: `running → succeeded/failed` only if the row still holds our `run_token`. A
   worker whose lease was taken over (it was presumed dead) or whose job was cancelled
   records nothing.

While the run function works, a heartbeat thread renews the lease and writes the job's
pending log lines and progress (coalesced: one transaction a beat, not one per line).
When the renewal finds the job no longer ours (cancelled, or reclaimed), it sets the
context's `cancelled` event; a run function that does not stop within
`cancel_grace_seconds` has its pool process killed (Celery's prefork pool replaces it; the
redelivered message is dropped at claim).

A job costs one statement and one short transaction on the hot path: the claim (one
UPDATE in autocommit) and the finish (UPDATE, log lines; the query for dependents only
when some job waits on this one), written with SQLAlchemy Core: the dispatch benchmark
showed the ORM, per-line commits and round trips dominating. The "started" log line
waits for the run's first write of lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Text, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import aliased

from submitter.db.models import Artifact, Job, JobDependency, JobLog
from submitter.db.types import JSONType, UTCDateTime, utcnow
from submitter.jobs.artifacts import artifact_key
from submitter.jobs.context import (
    HandedOff,
    JobCancelled,
    JobContext,
    JobFailed,
    Workdir,
    folder_prefix,
    remove_folders,
)
from submitter.jobs.registry import get_kind
from submitter.jobs.service import resolve_waiting
from submitter.jobs.states import TERMINAL, JobState
from submitter.logs import job_id_var
from submitter.runtime import Runtime
from submitter.sweeps import service as sweeps
from submitter.sweeps.service import HELD

logger = logging.getLogger(__name__)

#: (level, message, when the run function logged it)
LogLine = tuple[str, str, datetime]

# The hot-path statements, built once: building them per job (columns proxied for an
# alias, cache keys) cost more CPU than running them.
_dependency = aliased(Job)
_sibling = aliased(Job)
_parent = aliased(Job)
_OURS = (Job.id == bindparam("p_job_id")) & (Job.run_token == bindparam("p_token"))
_CLAIMABLE = (
    Job.id == bindparam("p_job_id"),
    Job.state == JobState.queued,
    ~select(JobDependency.job_id)
    .join(_dependency, _dependency.id == JobDependency.depends_on_id)
    .where(
        JobDependency.job_id == bindparam("p_job_id"),
        _dependency.state != JobState.succeeded,
    )
    .exists(),
)
# A sweep's child may start only while fewer than the sweep's `max_parallel` children run.
# Checked in the claim itself, with the parent's row locked (submitter.sweeps.service
# .lock_parent), so that it holds across any number of workers.
_PARENT_LIMIT = select(_parent.max_parallel).where(_parent.id == bindparam("p_parent_id"))
_RUNNING_SIBLINGS = (
    select(func.count())
    .select_from(_sibling)
    .where(_sibling.parent_id == bindparam("p_parent_id"), _sibling.state == JobState.running)
)


#: What a claim returns: what the run needs, and the sweep to tell when the job ends.
_CLAIMED = (Job.kind, Job.spec, Job.attempts, Job.external_id, Job.phase, Job.parent_id)


#: What a claim sets: running under our run token and lease, one attempt more.
_CLAIM_VALUES: dict[str, Any] = {
    "state": JobState.running,
    "phase": None,
    "attempts": Job.attempts + 1,
    "started_at": bindparam("p_now", type_=UTCDateTime()),
    "lease_expires_at": bindparam("p_lease", type_=UTCDateTime()),
    "run_token": bindparam("p_token"),
    "worker": bindparam("p_worker"),
    "error": None,
}


def _claim_statement(*conditions: Any) -> Any:
    return update(Job).where(*_CLAIMABLE, *conditions).values(**_CLAIM_VALUES).returning(*_CLAIMED)


_CLAIM = _claim_statement(Job.parent_id.is_(None))
_CLAIM_CHILD = _claim_statement(
    Job.parent_id == bindparam("p_parent_id"),
    or_(
        _PARENT_LIMIT.scalar_subquery().is_(None),
        _RUNNING_SIBLINGS.scalar_subquery() < _PARENT_LIMIT.scalar_subquery(),
    ),
)
#: The jobs of one message (run_jobs), claimed in one statement: the same conditions as
#: _CLAIM for each row, sweeps' children excepted (they take the per-job path).
_CLAIM_MANY = (
    update(Job)
    .where(
        Job.id.in_(bindparam("p_ids", expanding=True)),
        Job.state == JobState.queued,
        Job.parent_id.is_(None),
        ~select(JobDependency.job_id)
        .join(_dependency, _dependency.id == JobDependency.depends_on_id)
        .where(JobDependency.job_id == Job.id, _dependency.state != JobState.succeeded)
        .exists(),
    )
    .values(**_CLAIM_VALUES)
    .returning(Job.id, *_CLAIMED)
)
#: The claimed jobs of a message that wait their turn: their leases renewed, and the ones
#: still ours returned (a cancelled or taken-over job is not started).
_RENEW_MANY = (
    update(Job)
    .where(
        Job.id.in_(bindparam("p_ids", expanding=True)),
        Job.run_token == bindparam("p_token"),
        Job.state == JobState.running,
    )
    .values(lease_expires_at=bindparam("p_lease", type_=UTCDateTime()))
    .returning(Job.id)
)
_PARENT_OF = select(Job.parent_id).where(Job.id == bindparam("p_job_id"))
# A child refused by its sweep's limit waits, held, for a sibling to end (sweeps.service).
_HOLD = (
    update(Job)
    .where(Job.id == bindparam("p_job_id"), Job.state == JobState.queued)
    .values(phase=HELD, enqueued_at=None)
)
# A job handed off to an external system (HandedOff) comes back still `running`, with no
# run token, in phase `collecting` (its SLURM job ended) or `released` (a throttled job's
# turn came): a worker takes it over with a fresh token and lease.
RESUMED_PHASES = ("collecting", "released")
_RESUME = (
    update(Job)
    .where(
        Job.id == bindparam("p_job_id"),
        Job.state == JobState.running,
        Job.run_token.is_(None),
        Job.phase.in_(RESUMED_PHASES),
    )
    .values(
        lease_expires_at=bindparam("p_lease", type_=UTCDateTime()),
        run_token=bindparam("p_token"),
        worker=bindparam("p_worker"),
    )
    .returning(*_CLAIMED)
)
_HANDOFF = (
    update(Job)
    .where(_OURS, Job.state == JobState.running)
    .values(
        run_token=None,
        lease_expires_at=None,
        phase=bindparam("p_phase"),
        message=func.coalesce(bindparam("p_message", type_=Text()), Job.message),
    )
)
_EXTERNAL_ID = (
    update(Job)
    .where(_OURS, Job.state == JobState.running)
    .values(external_id=bindparam("p_external_id"), phase="submitted")
)
_RENEW = (
    update(Job)
    .where(_OURS, Job.state == JobState.running)
    .values(lease_expires_at=bindparam("p_lease", type_=UTCDateTime()))
)
_FINISHED = update(Job).where(_OURS, Job.state == JobState.running)
_FINISH_COMMON = {
    "finished_at": bindparam("p_now", type_=UTCDateTime()),
    "lease_expires_at": None,
}
#: Returned by the finish: how many jobs wait on this one, so that the common job, which
#: none waits on, skips the query for them (one round trip fewer per job).
_DEPENDENT_COUNT = (
    select(func.count())
    .select_from(JobDependency)
    .where(JobDependency.depends_on_id == Job.id)
    .scalar_subquery()
)
_FINISH = {
    JobState.succeeded: _FINISHED.values(
        state=JobState.succeeded,
        result=bindparam("p_result", type_=JSONType),
        progress=1.0,
        phase=None,
        message="finished",  # not the last step's message ("lightgbm fold 5/5")
        **_FINISH_COMMON,
    ),
    JobState.failed: _FINISHED.values(
        state=JobState.failed,
        result=bindparam("p_result", type_=JSONType),
        error=bindparam("p_error"),
        message=bindparam("p_error"),
        **_FINISH_COMMON,
    ),
    JobState.cancelled: _FINISHED.values(state=JobState.cancelled, **_FINISH_COMMON),
}
_FINISH = {state: statement.returning(_DEPENDENT_COUNT) for state, statement in _FINISH.items()}
_DEPENDENTS = select(JobDependency.job_id).where(
    JobDependency.depends_on_id == bindparam("p_job_id")
)
_INSERT_LOG = insert(JobLog)
_INSERT_ARTIFACT = insert(Artifact)
_DELETE_ARTIFACTS = delete(Artifact).where(Artifact.job_id == bindparam("p_job_id"))


@dataclass(frozen=True)
class Claim:
    """A job this worker now runs: what its run needs, from the claiming UPDATE."""

    kind: str
    spec: dict[str, Any]
    attempt: int
    external_id: str | None
    phase: str | None
    #: The sweep this job is a child of, told when the job ends (sweeps.child_ended).
    parent_id: str | None
    #: The "started on" log line, written with the run's first batch of lines.
    line: LogLine


def run_job(runtime: Runtime, job_id: str, worker_name: str, *, in_pool_child: bool) -> str:
    """Run job `job_id` if this message may; return what happened (for logs and tests)."""
    token = uuid.uuid4().hex
    claim = _claim(runtime, job_id, token, worker_name)
    if claim is None:
        logger.info("message for job %s dropped: not claimable (duplicate or not ready)", job_id)
        return "dropped"
    reset = job_id_var.set(job_id)
    try:
        outcome, dependents = _execute(runtime, job_id, token, claim, in_pool_child)
    finally:
        job_id_var.reset(reset)
    if dependents:
        resolve_waiting(runtime, dependents)
    if outcome in TERMINAL and claim.parent_id is not None:
        sweeps.child_ended(runtime, job_id, claim.parent_id)
    return outcome


#: A message's outcomes are written together once this much time passed since the last
#: write (checked after each job), and at the message's end.
GROUP_WRITE_SECONDS = 0.1


def run_jobs(
    runtime: Runtime, job_ids: list[str], worker_name: str, *, in_pool_child: bool
) -> list[str]:
    """Run the jobs of one message (dispatch.send_jobs: jobs of a short kind, `group` > 1)
    one after the other; return what happened to each.

    They are claimed in one statement, and their outcomes written a few at a time, in one
    transaction, which also renews the leases of the claimed jobs still waiting their turn
    and says which of them are still ours. The guarantees are the per-job path's: each
    outcome is recorded only under our run token. A worker lost mid-message loses the
    claims of the jobs it had not recorded; the reconciler runs them again.
    """
    token = uuid.uuid4().hex
    claims = _claim_many(runtime, job_ids, token, worker_name)
    outcomes: dict[str, str] = {}
    unwritten: list[Outcome] = []

    def collect(_: Runtime, outcome: Outcome) -> tuple[str, list[str]]:
        unwritten.append(outcome)
        return "unwritten", []

    written_at = time.monotonic()
    for position, job_id in enumerate(job_ids):
        claim = claims.get(job_id)
        if claim is None:  # a sweep's child, a job coming back, or not claimable now
            outcomes[job_id] = run_job(runtime, job_id, worker_name, in_pool_child=in_pool_child)
            continue
        if job_id in outcomes:  # no longer ours while it waited: not started
            continue
        later = job_ids[position + 1 :]
        waiting = [j for j in dict.fromkeys(later) if j in claims and j not in outcomes]
        reset = job_id_var.set(job_id)
        try:
            outcome, dependents = _execute(
                runtime, job_id, token, claim, in_pool_child, collect, waiting
            )
        finally:
            job_id_var.reset(reset)
        if outcome != "unwritten":  # handed off: written already
            outcomes[job_id] = outcome
            if dependents:
                resolve_waiting(runtime, dependents)
        if time.monotonic() - written_at >= GROUP_WRITE_SECONDS:
            _write_outcomes(runtime, unwritten, waiting, token, outcomes)
            unwritten.clear()
            written_at = time.monotonic()
    _write_outcomes(runtime, unwritten, [], token, outcomes)
    return [outcomes.get(job_id, "dropped") for job_id in job_ids]


def _write_outcomes(
    runtime: Runtime,
    unwritten: list[Outcome],
    waiting: list[str],
    token: str,
    outcomes: dict[str, str],
) -> None:
    """Record `unwritten` outcomes and renew the `waiting` claims in one transaction; put
    each outcome, and "superseded" for each waiting job no longer ours, into `outcomes`."""
    if not unwritten and not waiting:
        return
    dependents: list[str] = []
    with runtime.engine.begin() as connection:
        lines = []
        for outcome in unwritten:
            recorded, waiting_on_it, job_lines = _record(connection, outcome)
            outcomes[outcome.job_id] = recorded
            dependents += waiting_on_it
            lines.append((outcome.job_id, job_lines))
        _write_logs(connection, lines)
        if waiting:
            lease = utcnow() + timedelta(seconds=runtime.settings.job_lease_seconds)
            params = {"p_ids": waiting, "p_token": token, "p_lease": lease}
            ours = set(connection.scalars(_RENEW_MANY, params))
            outcomes.update({job_id: "superseded" for job_id in waiting if job_id not in ours})
    if dependents:
        resolve_waiting(runtime, list(dict.fromkeys(dependents)))


def _claim_many(
    runtime: Runtime, job_ids: list[str], token: str, worker_name: str
) -> dict[str, Claim]:
    """Claim every job of `job_ids` that the per-job claim's common path would, in one
    statement (autocommit, as `_claim`)."""
    now = utcnow()
    params = {
        "p_ids": list(dict.fromkeys(job_ids)),
        "p_now": now,
        "p_lease": now + timedelta(seconds=runtime.settings.job_lease_seconds),
        "p_token": token,
        "p_worker": worker_name,
    }
    with runtime.autocommit.begin() as connection:
        rows = connection.execute(_CLAIM_MANY, params).all()
    claims = {}
    for job_id, kind, spec, attempt, external_id, phase, parent_id in rows:
        line = ("INFO", f"started on {worker_name} (attempt {attempt})", now)
        claims[job_id] = Claim(kind, dict(spec), attempt, external_id, phase, parent_id, line)
    return claims


def _claim(runtime: Runtime, job_id: str, token: str, worker_name: str) -> Claim | None:
    """Claim the job: one conditional UPDATE on the common path.

    That UPDATE is the whole transaction, so it runs in autocommit (no BEGIN and COMMIT
    round trips); a job it does not match (a sweep's child, a handed-off job coming back,
    or one not claimable at all) takes the transactional path.
    """
    now = utcnow()
    params = {
        "p_job_id": job_id,
        "p_now": now,
        "p_lease": now + timedelta(seconds=runtime.settings.job_lease_seconds),
        "p_token": token,
        "p_worker": worker_name,
    }
    verb = "started"
    with runtime.autocommit.begin() as connection:
        row = connection.execute(_CLAIM, params).one_or_none()
    if row is None:
        with runtime.engine.begin() as connection:
            parent_id = connection.scalar(_PARENT_OF, params)
            if parent_id is not None:
                row = _claim_child(connection, {**params, "p_parent_id": parent_id})
            if row is None:
                row = connection.execute(_RESUME, params).one_or_none()
                verb = "resumed"
    if row is None:
        return None
    kind, spec, attempt, external_id, phase, parent_id = row
    line = ("INFO", f"{verb} on {worker_name} (attempt {attempt})", now)
    return Claim(kind, dict(spec), attempt, external_id, phase, parent_id, line)


def _claim_child(connection: Connection, params: dict[str, Any]) -> Any:
    """Claim a sweep's child within its sweep's `max_parallel`; a child over the limit goes
    back to `held` in the same transaction (a sibling that ends releases it)."""
    sweeps.lock_parent(connection, params["p_parent_id"])
    row = connection.execute(_CLAIM_CHILD, params).one_or_none()
    if row is None and connection.execute(_HOLD, params).rowcount:
        logger.info("job %s held: its sweep runs max_parallel children", params["p_job_id"])
    return row


def _execute(
    runtime: Runtime,
    job_id: str,
    token: str,
    claim: Claim,
    in_pool_child: bool,
    finish: Callable[[Runtime, Outcome], tuple[str, list[str]]] | None = None,
    waiting: list[str] | None = None,
) -> tuple[str, list[str]]:
    """Run the claimed job; record its outcome with `finish` (`_finish` by default: now,
    in its own transaction; `run_jobs` collects a message's outcomes instead). The leases
    of `waiting` (claimed with the same token, their turn to come) are renewed with this
    job's, so a long job does not let them lapse."""
    pending = PendingWrites([claim.line])
    scratch = Workdir(prefix=folder_prefix(job_id))
    context = JobContext(
        job_id=job_id,
        attempt=claim.attempt,
        log_line=pending.add_line,
        report_progress=pending.set_progress,
        scratch=scratch,
        runtime=runtime,
        external_id=claim.external_id,
        record_external_id=lambda value: _record_external_id(runtime, job_id, token, value),
        resumed_phase=claim.phase,
    )
    heartbeat = Heartbeat(
        runtime,
        job_id,
        token,
        context.cancelled,
        pending,
        kill_on_stuck=in_pool_child,
        scratch=scratch,
        process_groups=context.process_groups,
        waiting=waiting,
    )
    heartbeat.start()
    result: Any = None
    error: str | None = None
    handed_off: HandedOff | None = None
    try:
        kind = get_kind(claim.kind)
        result = kind.run(kind.spec_model.model_validate(claim.spec), context)
        json.dumps(result)  # the result goes into a JSON column; fail here, clearly
        state = JobState.succeeded
    except JobCancelled:
        state = JobState.cancelled
    except HandedOff as handoff:
        state, handed_off = JobState.running, handoff
    except JobFailed as failure:
        state, error, result = JobState.failed, str(failure)[:2000], failure.result
        logger.warning("job %s failed: %s", job_id, error)
    except Exception as exc:
        state = JobState.failed
        error = f"{type(exc).__name__}: {exc}"[:2000]
        pending.add_line("ERROR", traceback.format_exc())
        logger.warning("job %s failed: %s", job_id, error)
    finally:
        heartbeat.stop()
    if handed_off is not None:
        scratch.remove()
        return _hand_off(runtime, job_id, token, handed_off, pending)
    try:
        made = scratch.made
        artifacts = (
            []
            if state == JobState.cancelled or made is None
            else _upload_artifacts(runtime, job_id, made)
        )
    except Exception as exc:  # the job's own outcome stands; say what was not kept
        artifacts = []
        pending.add_line("ERROR", f"artifacts not saved: {type(exc).__name__}: {exc}")
    finally:
        scratch.remove()
    lines, _ = pending.take()
    outcome = Outcome(job_id, token, state, result, error, lines, artifacts)
    return (finish or _finish)(runtime, outcome)


def _record_external_id(runtime: Runtime, job_id: str, token: str, external_id: str) -> bool:
    with runtime.engine.begin() as connection:
        params = {"p_job_id": job_id, "p_token": token, "p_external_id": external_id}
        return bool(connection.execute(_EXTERNAL_ID, params).rowcount)


def _hand_off(
    runtime: Runtime, job_id: str, token: str, handoff: HandedOff, pending: PendingWrites
) -> tuple[str, list[str]]:
    """Release a job whose work goes on elsewhere: still running, no worker, no lease."""
    lines, _ = pending.take()
    with runtime.engine.begin() as connection:
        params = {
            "p_job_id": job_id,
            "p_token": token,
            "p_phase": handoff.phase,
            "p_message": handoff.message,
        }
        released = connection.execute(_HANDOFF, params).rowcount
        _write_log(connection, job_id, lines)
    return ("handed off" if released else "superseded"), []


def _upload_artifacts(runtime: Runtime, job_id: str, workdir: Path) -> list[dict[str, Any]]:
    """Put every regular file under the job's workdir into the store, under the job."""
    rows = []
    for path in sorted(workdir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        name = path.relative_to(workdir).as_posix()
        key = artifact_key(job_id, name)
        stored = runtime.store.put_file(key, path)
        rows.append(
            {
                "job_id": job_id,
                "name": name,
                "size": stored.size,
                "sha256": stored.sha256,
                "storage_key": key,
            }
        )
    return rows


@dataclass
class Outcome:
    """How a run ended, to be recorded if the job is still ours."""

    job_id: str
    token: str
    state: JobState
    result: Any
    error: str | None
    lines: list[LogLine]
    artifacts: list[dict[str, Any]]


def _finish(runtime: Runtime, outcome: Outcome) -> tuple[str, list[str]]:
    """Record the outcome in its own transaction; return it and the dependents to settle."""
    with runtime.engine.begin() as connection:
        recorded, dependents, lines = _record(connection, outcome)
        _write_log(connection, outcome.job_id, lines)
    return recorded, dependents


def _record(connection: Connection, outcome: Outcome) -> tuple[str, list[str], list[LogLine]]:
    """Write the outcome if the job is still ours (run token, state running); return what
    happened, the jobs waiting on it, and its log lines to write (the caller writes them,
    so that `run_jobs` writes a whole message's lines in one statement)."""
    job_id, state = outcome.job_id, outcome.state
    now = utcnow()
    params: dict[str, Any] = {"p_job_id": job_id, "p_token": outcome.token, "p_now": now}
    if state == JobState.succeeded:
        params["p_result"] = outcome.result
    elif state == JobState.failed:
        params["p_error"] = outcome.error
        params["p_result"] = outcome.result
    lines = list(outcome.lines)
    row = connection.execute(_FINISH[state], params).one_or_none()
    if row is not None:
        if outcome.artifacts:
            connection.execute(_DELETE_ARTIFACTS, {"p_job_id": job_id})
            connection.execute(_INSERT_ARTIFACT, outcome.artifacts)
            lines.append(("INFO", f"saved {len(outcome.artifacts)} artifact(s)", now))
        lines.append(("INFO", f"finished: {state}", now))
    else:
        # Cancelled meanwhile, or the lease was taken over: the row is someone else's.
        lines.append(("INFO", f"run on this worker stopped ({state}): job no longer ours", now))
    waited_on = row is None or row[0] > 0
    dependents = list(connection.scalars(_DEPENDENTS, {"p_job_id": job_id})) if waited_on else []
    return (str(state) if row is not None else "superseded"), dependents, lines


def _write_log(connection: Connection, job_id: str, lines: list[LogLine]) -> None:
    _write_logs(connection, [(job_id, lines)])


def _write_logs(connection: Connection, jobs: list[tuple[str, list[LogLine]]]) -> None:
    """The log lines of one or more jobs, in one INSERT."""
    rows = [
        {"job_id": job_id, "level": level, "message": text, "at": at}
        for job_id, lines in jobs
        for level, text, at in lines
    ]
    if rows:
        connection.execute(_INSERT_LOG, rows)


class PendingWrites:
    """Log lines and progress a run function reported, until the next heartbeat writes them."""

    def __init__(self, lines: list[LogLine] | None = None) -> None:
        self._lock = threading.Lock()
        self._lines: list[LogLine] = list(lines or [])
        self._progress: dict[str, Any] = {}
        self._highest = 0.0

    def add_line(self, level: str, message: str) -> None:
        # Stamped now, not when the heartbeat writes it: a line's time is when it happened.
        at = utcnow()
        with self._lock:
            self._lines.append((level, message, at))

    def set_progress(self, fraction: float | None, message: str | None, phase: str | None) -> None:
        """Progress only goes forward: work done in parallel threads (folds) reports out of
        order, and a report behind the highest one seen is dropped with its message."""
        with self._lock:
            if fraction is not None:
                if fraction < self._highest:
                    return
                self._highest = fraction
            for key, value in (("progress", fraction), ("message", message), ("phase", phase)):
                if value is not None:
                    self._progress[key] = value

    def take(self) -> tuple[list[LogLine], dict[str, Any]]:
        with self._lock:
            lines, progress = self._lines, self._progress
            self._lines, self._progress = [], {}
            return lines, progress


class Heartbeat:
    """Renews the job's lease, writes pending log lines and progress, notices cancellation.

    Its beats run on the process's one beat thread (`_Beats`), not on a thread of its
    own: starting and joining a thread per job cost about 0.4 ms of a 3 ms echo job in
    bench/dispatch.py, and most short jobs end before their first beat.
    """

    def __init__(
        self,
        runtime: Runtime,
        job_id: str,
        token: str,
        cancelled: threading.Event,
        pending: PendingWrites,
        *,
        kill_on_stuck: bool,
        scratch: Workdir | None = None,
        process_groups: set[int] | None = None,
        waiting: list[str] | None = None,
    ) -> None:
        self.waiting = waiting or []
        self.scratch = scratch
        self.process_groups = process_groups if process_groups is not None else set()
        self.runtime = runtime
        self.job_id = job_id
        self.token = token
        self.cancelled = cancelled
        self.pending = pending
        self.kill_on_stuck = kill_on_stuck
        self._stop_event = threading.Event()
        lease = runtime.settings.job_lease_seconds
        # Often enough to survive two missed beats, and to notice a cancel quickly.
        self.interval = max(0.25, min(1.0, lease / 3))

    def start(self) -> None:
        _beats().add(self)

    def stop(self) -> None:
        """Stop beating; returns once no beat of this job is under way (the caller's final
        write must not race one)."""
        self._stop_event.set()
        _beats().remove(self)

    def beat(self) -> bool:
        """One beat; False when beating this job should stop (it is no longer ours)."""
        try:
            renewed = self._beat()
        except Exception as error:  # the DB blipped; try again on the next beat
            logger.warning("heartbeat of job %s failed: %s", self.job_id, error)
            return True
        if not renewed:
            self.cancelled.set()
            # On the beat thread itself: it waits out the grace only in a prefork pool
            # process (kill_on_stuck), which runs this one job and no other.
            self._stop_run()
        return renewed

    def _beat(self) -> bool:
        lines, progress = self.pending.take()
        lease = timedelta(seconds=self.runtime.settings.job_lease_seconds)
        params = {"p_job_id": self.job_id, "p_token": self.token, "p_lease": utcnow() + lease}
        statement = _RENEW.values(**progress) if progress else _RENEW
        with self.runtime.engine.begin() as connection:
            renewed = connection.execute(statement, params).rowcount
            _write_log(connection, self.job_id, lines)
            if self.waiting:
                connection.execute(_RENEW_MANY, {**params, "p_ids": self.waiting}).all()
        return bool(renewed)

    def _stop_run(self) -> None:
        """Give the run function the grace period, then kill this pool process."""
        grace = self.runtime.settings.cancel_grace_seconds
        if self._stop_event.wait(grace) or not self.kill_on_stuck:
            return
        logger.warning("job %s did not stop within %.0fs of cancel: killing", self.job_id, grace)
        for group in list(self.process_groups):  # nor would the run kill what it started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        # No `finally` runs after SIGKILL: clean up first (once what wrote there is dead).
        if self.scratch is not None:
            self.scratch.remove()
        remove_folders(self.job_id)
        os.kill(os.getpid(), signal.SIGKILL)


class _Beats(threading.Thread):
    """The process's beat thread: beats every registered Heartbeat at its interval."""

    def __init__(self) -> None:
        super().__init__(name="heartbeats", daemon=True)
        self._changed = threading.Condition()
        self._due: dict[Heartbeat, float] = {}
        self._beating: Heartbeat | None = None

    def add(self, heartbeat: Heartbeat) -> None:
        with self._changed:
            self._due[heartbeat] = time.monotonic() + heartbeat.interval
            self._changed.notify_all()

    def remove(self, heartbeat: Heartbeat) -> None:
        with self._changed:
            self._due.pop(heartbeat, None)
            while self._beating is heartbeat:
                self._changed.wait()

    def run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                heartbeat = min(self._due, key=self._due.__getitem__, default=None)
                if heartbeat is None or self._due[heartbeat] > now:
                    timeout = None if heartbeat is None else self._due[heartbeat] - now
                    self._changed.wait(timeout)
                    continue
                self._due[heartbeat] = now + heartbeat.interval
                self._beating = heartbeat
            try:
                keep = heartbeat.beat()
            finally:
                with self._changed:
                    self._beating = None
                    if not keep:
                        self._due.pop(heartbeat, None)
                    self._changed.notify_all()


_BEATS: dict[int, _Beats] = {}
_BEATS_LOCK = threading.Lock()


def _beats() -> _Beats:
    """This process's beat thread, started on first use (a forked pool process has none of
    its parent's threads, hence one per pid)."""
    pid = os.getpid()
    with _BEATS_LOCK:
        beats = _BEATS.get(pid)
        if beats is None:
            beats = _BEATS[pid] = _Beats()
            beats.start()
        return beats
