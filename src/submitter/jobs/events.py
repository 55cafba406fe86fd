"""Live updates of one job as Server-Sent Events: its state and progress, new log lines,
and its end.

Why a poll of the database rather than a message bus: the database is the one place every
process writes (workers on other hosts write progress and log lines there with their
heartbeat, the API writes cancels, beat writes lost-worker outcomes), whatever the broker.
A poll is one short read transaction (`Runtime.reads`: on SQLite it does not queue for
the write lock) in a worker thread, so the event loop goes on serving; between polls the
stream holds no connection.

The generator knows nothing of HTTP or authentication: the API route wraps it with
`submitter.api.sse.sse_response`, and the web console can wrap it the same way behind its
own session check.

The stream, as `EventSource` sees it (every `data:` is one line of JSON):

- `state`: the whole job, as `GET /api/v1/jobs/{id}` answers it. First, once at the
  start, then whenever anything of it changes (state, phase, progress, message,
  attempts, worker, ...). The last state of a job that ends while it is watched comes as
  `end`, not as a `state`.
- `log`: one new log line, as an item of `GET /api/v1/jobs/{id}/logs`
  (`{"id", "at", "level", "message"}`), in order.
- `end`: the finished job (same shape as `state`); the stream then closes. A browser's
  EventSource reconnects to any closed stream: call `close()` on `end`.
- `reconnect`: `{"detail"}`; the stream reached its longest life
  (`SUBMITTER_EVENTS_MAX_SECONDS`) and closes: connect again (EventSource does, sending
  `Last-Event-ID`) to go on where it stopped.
- `error`: `{"detail"}`; the stream could not go on (the database went away) and closes;
  `retry:` asks for a reconnect in 5 s.
- `: ping` comments when nothing else was sent for `heartbeat` seconds, so proxies and
  clients can tell a quiet stream from a dead one.

Every event's `id:` is the id of the last log line sent so far (`0` before any): the
cursor a reconnect sends back as `Last-Event-ID` (or `?after=`), so that it gets the
current state again and only the log lines it has not seen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from submitter.db.models import Job, JobLog
from submitter.db.session import describe_database
from submitter.jobs.schemas import JobOut, LogLineOut
from submitter.jobs.service import JobNotFound
from submitter.jobs.states import TERMINAL
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

EventName = Literal["state", "log", "end", "reconnect", "error", "ping"]

#: Seconds a client should wait before reconnecting after an `error` event (as the 503s'
#: Retry-After).
RETRY_AFTER_SECONDS = 5
#: The reconnection delay (ms) given to EventSource with the first event, and after a
#: `reconnect` event (that one is planned: come back at once).
FIRST_RETRY_MS = 3000
RECONNECT_RETRY_MS = 1000
#: Most log lines read in one poll; a poll that fills it is followed at once by the next.
LOG_BATCH = 500
#: Polls of all streams of one process run in at most this many threads at once (so at
#: most this many pooled connections): many watchers slow each other down, never the
#: API's other routes, which share anyio's default pool of 40 threads.
POLL_THREADS = 4
_poll_limiter: RunVar[anyio.CapacityLimiter] = RunVar("submitter_job_events_limiter")
_TERMINAL = frozenset(state.value for state in TERMINAL)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job's stream. `id` is the log cursor (see the module docstring);
    `retry_ms` the reconnection delay to tell the client, if any."""

    event: EventName
    data: dict[str, Any] | None = None
    id: int | None = None
    retry_ms: int | None = None


PING = JobEvent("ping")


def format_sse(event: JobEvent) -> bytes:
    """The event in the `text/event-stream` wire format, ending with its blank line.

    `data` is one line of JSON (json escapes newlines; `ensure_ascii` escapes every
    non-ASCII character, so a lone surrogate a log line may hold cannot break the UTF-8
    stream). A `ping` is a comment line, which EventSource ignores."""
    if event.event == "ping":
        return b": ping\n\n"
    lines = [f"event: {event.event}"]
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry_ms is not None:
        lines.append(f"retry: {event.retry_ms}")
    lines.append("data: " + json.dumps(event.data, separators=(",", ":"), allow_nan=False))
    return ("\n".join(lines) + "\n\n").encode("ascii")


def resume_cursor(after: int = 0, last_event_id: int | None = None) -> int:
    """Where a (re)connecting stream starts its log: after the later of `?after=` and the
    `Last-Event-ID` header. A browser reconnects to the same URL, so its `?after=` is
    stale and the header, when given, is at least as far."""
    return max(after, last_event_id or 0)


def read_update(
    runtime: Runtime, job_id: str, after: int, limit: int = LOG_BATCH
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job (JobOut as JSON) and up to `limit` of its log lines with id > `after`, in
    one read transaction. The job is read first: when it has ended, the lines read after
    it include every line written before its end. Raise JobNotFound."""
    with runtime.reads() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        state = JobOut.model_validate(job).model_dump(mode="json")
        lines = session.scalars(
            select(JobLog)
            .where(JobLog.job_id == job_id, JobLog.id > after)
            .order_by(JobLog.id)
            .limit(limit)
        ).all()
        return state, [LogLineOut.model_validate(line).model_dump(mode="json") for line in lines]


async def job_events(
    runtime: Runtime,
    job_id: str,
    *,
    after_log: int = 0,
    poll: float = 0.5,
    heartbeat: float = 15.0,
    max_seconds: float | None = None,
    linger: float = 3.0,
) -> AsyncGenerator[JobEvent, None]:
    """Follow job `job_id` (an existing, resolved id): see the module docstring for the
    events. Ends after `end`, `reconnect` (after `max_seconds`, by default
    SUBMITTER_EVENTS_MAX_SECONDS) or `error`; a client that goes away cancels it.

    `linger`: when a running job is cancelled, its worker writes its closing lines a
    moment after the state changed; the stream waits up to this long for them."""
    limit = runtime.settings.events_max_seconds if max_seconds is None else max_seconds
    started = last_sent = anyio.current_time()
    cursor = after_log
    previous: dict[str, Any] | None = None

    async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await anyio.to_thread.run_sync(
            read_update, runtime, job_id, cursor, limiter=_limiter()
        )

    try:
        while True:
            job, lines = await read()
            if job["state"] in _TERMINAL:
                if previous is None:  # it had ended before the stream started
                    yield JobEvent("state", job, cursor, FIRST_RETRY_MS)
                while lines:  # everything up to its end, however long
                    for line in lines:
                        cursor = line["id"]
                        yield JobEvent("log", line, cursor)
                    lines = [] if len(lines) < LOG_BATCH else (await read())[1]
                was_running = previous is not None and previous["state"] == "running"
                if job["state"] == "cancelled" and was_running and linger > 0:
                    async for line in _closing_lines(read, poll, linger):
                        cursor = line["id"]
                        yield JobEvent("log", line, cursor)
                yield JobEvent("end", job, cursor)
                return
            if job != previous:
                yield JobEvent("state", job, cursor, FIRST_RETRY_MS if previous is None else None)
                previous = job
                last_sent = anyio.current_time()
            for line in lines:
                cursor = line["id"]
                yield JobEvent("log", line, cursor)
                last_sent = anyio.current_time()
            now = anyio.current_time()
            if now - started >= limit:
                detail = (
                    f"this stream has been open {limit:.0f} s (SUBMITTER_EVENTS_MAX_SECONDS): "
                    "reconnect with Last-Event-ID to go on"
                )
                yield JobEvent("reconnect", {"detail": detail}, cursor, RECONNECT_RETRY_MS)
                return
            if now - last_sent >= heartbeat:
                yield PING
                last_sent = now
            if len(lines) < LOG_BATCH:  # a full batch: more are waiting, read on at once
                await anyio.sleep(min(poll, max(0.0, started + limit - now)))
    except JobNotFound:  # removed while watched
        yield JobEvent("error", {"detail": f"job {job_id} not found"}, cursor)
    except Exception as error:  # never a broken or hung stream: say so and close it
        yield _failure(runtime, error, cursor)


def _limiter() -> anyio.CapacityLimiter:
    """This event loop's limiter of poll threads (a RunVar: one per loop, as anyio keeps
    its own default thread limiter)."""
    try:
        return _poll_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(POLL_THREADS)
        _poll_limiter.set(limiter)
        return limiter


async def _closing_lines(
    read: Callable[[], Awaitable[tuple[dict[str, Any], list[dict[str, Any]]]]],
    poll: float,
    linger: float,
) -> AsyncIterator[dict[str, Any]]:
    """Log lines that come within `linger` seconds, stopping at the first quiet poll after
    some came (the worker writes its closing lines in one or two transactions)."""
    deadline = anyio.current_time() + linger
    got_some = False
    while anyio.current_time() < deadline:
        await anyio.sleep(poll)
        _, lines = await read()
        if not lines and got_some:
            return
        got_some = got_some or bool(lines)
        for line in lines:
            yield line


def _failure(runtime: Runtime, error: Exception, cursor: int) -> JobEvent:
    """The `error` event that closes a stream whose read failed, and a log record of it."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if isinstance(error, SQLAlchemyError):
        where = describe_database(runtime.settings.db_url)
        logger.warning("job event stream closed: database unavailable: %s", first_line)
        detail = f"database unavailable ({where}): {first_line}"
    else:
        logger.exception("job event stream closed by an unexpected error")
        detail = f"the event stream failed ({type(error).__name__})"
    return JobEvent(
        "error",
        {"detail": f"{detail}; reconnect in {RETRY_AFTER_SECONDS} s"},
        cursor,
        RETRY_AFTER_SECONDS * 1000,
    )
