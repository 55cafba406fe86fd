"""Reading the service logs (for the route) and keeping them bounded (retention).

Retention runs in the writers, not in beat: each process's log handler prunes about once
a minute (`ServiceLogHandler.prune_every`), right after one of its own flushes. That keeps
the table bounded wherever records are written - an API alone, a deployment without beat,
a worker on a host of its own - and costs each process one indexed query and a few
chunked deletes a minute. Several processes pruning at once is harmless: each delete is
idempotent, and each chunk is its own short transaction, so the embedded SQLite file's
write lock is never held for more than one chunk and job writes do not wait on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, func, select
from sqlalchemy.sql.elements import ColumnElement

from submitter.db.models import ServiceLog
from submitter.db.session import SQLITE_BEGIN
from submitter.db.types import utcnow
from submitter.runtime import Runtime
from submitter.servicelogs.schemas import LEVELS, Order, ServiceLogOut

#: Rows deleted per transaction while pruning, and transactions per prune at most: a
#: prune removes up to 20,000 rows, far more than one process writes in a minute.
PRUNE_CHUNK = 1000
PRUNE_MAX_CHUNKS = 20


@dataclass(frozen=True)
class LogQuery:
    """The route's filters; `None` is "any"."""

    service: str | None = None
    host: str | None = None
    level: str | None = None  # least level: WARNING also returns ERROR and CRITICAL
    job_id: str | None = None
    since: datetime | None = None  # time >= since
    until: datetime | None = None  # time < until
    after_id: int | None = None  # id > after_id

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.service is not None:
            where.append(ServiceLog.service == self.service)
        if self.host is not None:
            where.append(ServiceLog.host == self.host)
        if self.level is not None:
            where.append(ServiceLog.level >= LEVELS[self.level])
        if self.job_id is not None:
            where.append(ServiceLog.job_id == self.job_id)
        if self.since is not None:
            where.append(ServiceLog.time >= self.since)
        if self.until is not None:
            where.append(ServiceLog.time < self.until)
        if self.after_id is not None:
            where.append(ServiceLog.id > self.after_id)
        return where


def list_logs(
    runtime: Runtime, query: LogQuery, *, order: Order = "newest", limit: int, offset: int = 0
) -> tuple[list[ServiceLogOut], int]:
    """The records matching `query`, by id (the order they reached the DB), and how many
    match in all.

    By id rather than by time: ids only grow, so a follower that asks for `after_id` of the
    last record it saw misses none, whatever the hosts' clocks say. (Only two batches of
    PostgreSQL writers committing out of order within the same few milliseconds could slip
    one behind a follower; the records are then still there for the next plain read.)
    """
    where = query.conditions()
    sort = ServiceLog.id.desc() if order == "newest" else ServiceLog.id.asc()
    with runtime.reads() as session:
        total = session.scalar(select(func.count()).select_from(ServiceLog).where(*where)) or 0
        rows = session.scalars(
            select(ServiceLog).where(*where).order_by(sort).limit(limit).offset(offset)
        ).all()
        return [ServiceLogOut.model_validate(row) for row in rows], total


def prune(
    engine: Engine,
    *,
    max_rows: int,
    max_age_seconds: float,
    now: datetime | None = None,
    chunk: int = PRUNE_CHUNK,
    max_chunks: int = PRUNE_MAX_CHUNKS,
) -> int:
    """Delete the records older than `max_age_seconds` and those past the newest
    `max_rows`; return how many went.

    Both deletes go by an index (the primary key; time) in chunks of `chunk` rows, each
    its own transaction, at most `max_chunks` of them: what is left over goes at the
    next prune.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=max_age_seconds)
    reads = engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
    with reads.connect() as connection:
        # The newest id past the newest `max_rows`: it and every older one go.
        boundary = connection.scalar(
            select(ServiceLog.id).order_by(ServiceLog.id.desc()).offset(max_rows).limit(1)
        )
    removed = 0
    chunks = 0
    conditions: list[ColumnElement[bool]] = [ServiceLog.time < cutoff]
    if boundary is not None:
        conditions.insert(0, ServiceLog.id <= boundary)
    for condition in conditions:
        while chunks < max_chunks:
            ids = select(ServiceLog.id).where(condition).limit(chunk)
            with engine.begin() as connection:
                result = cast(
                    CursorResult[Any],
                    connection.execute(delete(ServiceLog).where(ServiceLog.id.in_(ids))),
                )
            chunks += 1
            removed += result.rowcount
            if result.rowcount < chunk:
                break
    return removed
