"""The logging handler of every service process: records into the `service_logs` table.

What it must never do is make the process wait on, or fail because of, the database: a
log call sits in request handlers, job runs and the worker's event loop. So:

- `emit` only formats the record and appends it to a bounded in-memory buffer. When the
  buffer is full the record is dropped and counted; nothing blocks, nothing raises.
- A daemon thread of the handler's own flushes the buffer about once a second (sooner when
  a batch is waiting), in one short transaction per batch, through an engine of its own
  with a single connection and short timeouts: connect 2 s, statement 3 s and lock 1 s on
  PostgreSQL, a 1 s busy timeout on SQLite. A slow or absent database therefore costs
  only records: a failed batch is tried again with back-off (so records survive a short
  outage, and the ones logged at start-up survive until the migrations made the table),
  and given up, counted as dropped, after `MAX_ATTEMPTS`. The next batch that gets through
  carries a WARNING record saying how many were dropped, so the gap is visible.
- Records logged by the flushing thread itself (SQLAlchemy, psycopg, this module's own
  warnings) are never captured: writing them would write more of them.
- The embedded SQLite file is shared with the job engine: a batch is one small INSERT in a
  `BEGIN IMMEDIATE` transaction at most once a second per process, so job writes (which
  wait up to 60 s for the lock) are never starved. The file is opened read-write without
  create (`mode=rw`): a handler never makes an empty database where migrations have not
  run yet.
- After `fork` (Celery's prefork pool children) the child starts empty: a new buffer,
  lock and counters, no thread (started by its first record) and no engine (the parent's
  connections are left alone, never closed from the child). Before a fork the forking
  thread waits (at most `FORK_WAIT_SECONDS`) for the flusher to be outside database code,
  so the child never inherits a driver lock (SQLite's, libpq's) held by a thread that does
  not exist in the child.
- At exit `logging.shutdown` (an atexit hook) calls `flush` and `close`: what is buffered
  is written, within `close_timeout` seconds. A pool child that exits without atexit
  flushes on Celery's `worker_process_shutdown`, and a SIGTERM that would end the process
  without atexit (the API's, re-raised by Uvicorn) flushes first (see `install`).

Retention runs here too, after a flush about once a minute (see
`submitter.servicelogs.service` for why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import socket
import sqlite3
import threading
import time
import weakref
from collections import deque
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, insert, make_url
from sqlalchemy.pool import QueuePool

from submitter.db.models import ServiceLog
from submitter.db.session import PSYCOPG_CONNECT_DEFAULTS, SQLITE_BEGIN, _discard_if_hung_up
from submitter.logs import job_id_var
from submitter.servicelogs import service as queries

if TYPE_CHECKING:
    from submitter.config import Settings

logger = logging.getLogger(__name__)

#: Loggers whose records are never captured (this package's own).
OWN_LOGGERS = "submitter.servicelogs"
#: Longest message kept, in characters, traceback included (cut with a note saying so).
MAX_MESSAGE_CHARS = 8192
#: Of which the message before a traceback keeps at most this many; the traceback keeps
#: its end (the exception and the innermost frames).
MAX_HEAD_CHARS_WITH_TRACEBACK = 2048
#: Tries of one batch before it is dropped.
MAX_ATTEMPTS = 10
#: Longest pause between tries while the database fails.
MAX_BACKOFF_SECONDS = 5.0
#: Longest wait of a fork for the flusher to leave database code.
FORK_WAIT_SECONDS = 5.0
#: Least seconds between two warnings (on stdout) about dropped records.
REPORT_EVERY_SECONDS = 60.0

INT32_MAX = 2**31 - 1
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates: PostgreSQL refuses them
_TRACEBACKS = logging.Formatter()


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (saying how much was cut), storable everywhere."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return _BAD_TEXT.sub("\ufffd", text)


def record_message(record: logging.LogRecord) -> str:
    """The record's message with its traceback and stack, at most `MAX_MESSAGE_CHARS`."""
    try:
        message = record.getMessage()
    except Exception:  # bad arguments for the format: keep what there is
        message = f"{record.msg!r} % {record.args!r}"
    extra = []
    if record.exc_info:
        extra.append(record.exc_text or _TRACEBACKS.formatException(record.exc_info))
    elif record.exc_text:
        extra.append(record.exc_text)
    if record.stack_info:
        extra.append(record.stack_info)
    if not extra:
        return bounded(message, MAX_MESSAGE_CHARS)
    head = bounded(message, MAX_HEAD_CHARS_WITH_TRACEBACK)
    tail = "\n".join(extra)
    room = MAX_MESSAGE_CHARS - len(head) - 1
    if len(tail) > room:
        tail = f"… ({len(tail) - room} characters cut)\n" + tail[len(tail) - room :]
    return bounded(f"{head}\n{tail}", MAX_MESSAGE_CHARS + 100)


def make_log_engine(url: str, *, service: str, timeout: float = 2.0) -> Engine:
    """A one-connection engine for the flusher, with short timeouts (see the module doc).

    Not `submitter.db.session.make_engine`: that one is made for the job engine, which
    must wait for the database (a 60 s SQLite busy timeout, a 10 s pool wait); records
    must not.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            raise ValueError("service logs need a database file, not an in-memory SQLite")
        uri = "file:" + quote(os.path.abspath(path)) + "?mode=rw"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=timeout / 2, check_same_thread=False)

        engine = create_engine(
            "sqlite+pysqlite://",
            creator=connect,
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=timeout,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 500)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    millis = int(timeout * 1000)
    query = parsed.query
    given = query.get("options")
    options = " ".join(
        part
        for part in (
            given if isinstance(given, str) else None,
            f"-c statement_timeout={int(millis * 1.5)} -c lock_timeout={millis // 2}",
            f"-c idle_in_transaction_session_timeout={millis * 5}",
        )
        if part
    )
    connect_args: dict[str, Any] = {
        name: value for name, value in PSYCOPG_CONNECT_DEFAULTS.items() if name not in query
    }
    connect_args.update(
        connect_timeout=max(2, int(timeout)),  # libpq's least
        # Bounds a write to a server host that vanished (no RST): otherwise the kernel
        # retransmits for many minutes while the buffer fills.
        tcp_user_timeout=millis * 3,
        options=options,
    )
    if "application_name" not in query:
        connect_args["application_name"] = f"submitter-{service}-logs"
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout,
        pool_recycle=1800,
    )
    event.listen(engine, "checkout", _discard_if_hung_up)
    return engine


class ServiceLogHandler(logging.Handler):
    """Buffers records and writes them to `service_logs` from a thread (see the module doc).

    `dropped` counts the records of this process that never reached the table (buffer
    full, or their batch failed `MAX_ATTEMPTS` times); `written` those that did.
    """

    def __init__(
        self,
        service: str,
        url: str,
        *,
        host: str | None = None,
        level: int | str = logging.INFO,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval: float = 1.0,
        timeout: float = 2.0,
        close_timeout: float = 3.0,
        max_rows: int = 100_000,
        max_age_seconds: float = 7 * 86400,
        prune_every: float = 60.0,
    ) -> None:
        super().__init__(level)
        self.service = service
        self.url = url
        self.host = bounded(host or socket.gethostname(), 255)
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.max_rows = max_rows
        self.max_age_seconds = max_age_seconds
        self.prune_every = prune_every
        self._closed = False
        self._start_fresh()
        _HANDLERS.add(self)

    def _start_fresh(self) -> None:
        """The state of a new handler, and of a forked child's copy of one."""
        self._pid = os.getpid()
        self._lock = threading.Lock()  # the buffer and the counters below
        self._flushed = threading.Condition(self._lock)
        self._buffer: deque[dict[str, Any]] = deque()
        self._queued = 0  # records appended to the buffer, ever
        self._done = 0  # of those, written or dropped
        self._io = threading.Lock()  # held by the flusher while in database code
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flusher: int | None = None  # the flusher thread's ident
        self._engine: Engine | None = None
        self._retry: list[dict[str, Any]] | None = None
        self._attempts = 0
        self._failures = 0  # failed writes in a row
        self._unreported = 0  # dropped records not yet said in the table
        self._reported_at = 0.0
        self._wrote_since_prune = False
        # Many processes start together: spread their first prunes over the interval.
        self._next_prune = time.monotonic() + random.uniform(0.1, 1.0) * self.prune_every
        self.dropped = 0
        self.written = 0

    # ---- the logging side: never blocks, never raises --------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._closed or threading.get_ident() == self._flusher:
                return
            if record.name.startswith(OWN_LOGGERS):
                return
            if self._pid != os.getpid():  # forked without the at-fork hook having run
                self._start_fresh()
            row = self._row(record)
            with self._lock:
                if len(self._buffer) >= self.capacity:
                    self.dropped += 1
                    self._unreported += 1
                    return
                self._buffer.append(row)
                self._queued += 1
                waiting = len(self._buffer)
                if self._thread is None:
                    self._start_thread()
            if waiting >= self.batch_size:
                self._wake.set()
        except Exception:
            self.dropped += 1

    def _row(self, record: logging.LogRecord) -> dict[str, Any]:
        try:
            at = datetime.fromtimestamp(record.created, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            at = datetime.now(UTC)
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        return {
            "time": at,
            "service": self.service,
            "host": self.host,
            "pid": record.process if isinstance(record.process, int) else os.getpid(),
            "level": max(0, min(int(record.levelno), INT32_MAX)),
            "logger": bounded(str(record.name), 255),
            "message": record_message(record),
            "job_id": None if job_id is None else bounded(str(job_id), 64),
        }

    def _start_thread(self) -> None:
        """Start the flusher (called with the buffer lock held, on the first record)."""
        thread = threading.Thread(
            target=self._run, name=f"submitter-servicelogs-{self.service}", daemon=True
        )
        self._thread = thread
        thread.start()

    def flush(self) -> None:
        """Write what is buffered now, waiting at most `close_timeout` seconds."""
        self.wait_written()

    def wait_written(self, timeout: float | None = None) -> bool:
        """Wait until the records buffered now are written (or dropped), at most `timeout`
        seconds (default `close_timeout`); True if they were. Returns at once while the
        database fails: nothing would come of waiting."""
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            return not self._buffer
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        target = self._queued
        self._wake.set()
        # With a timeout: a signal handler that flushes may have interrupted an `emit` of
        # this very thread, which holds the lock.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            while self._done < target and not self._failures:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._flushed.wait(remaining)
            return self._done >= target
        finally:
            self._lock.release()

    def close(self) -> None:
        """Write what is buffered (within `close_timeout`), then stop the flusher."""
        if not self._closed:
            self._closed = True
            thread = self._thread
            if thread is not None and self._pid == os.getpid() and thread.is_alive():
                self._stop.set()
                self._wake.set()
                thread.join(self.close_timeout)
            if self._engine is not None and (thread is None or not thread.is_alive()):
                self._engine.dispose()
                self._engine = None
        super().close()

    # ---- the flusher thread ----------------------------------------------------------
    def _run(self) -> None:
        self._flusher = threading.get_ident()
        while True:
            if self._failures:  # back off; only a stop cuts the pause short
                self._stop.wait(min(MAX_BACKOFF_SECONDS, 0.25 * 2**self._failures))
            else:
                self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._drain()
                if not stopping:
                    self._maybe_prune()
            except Exception as error:  # never let the flusher die
                self._report(error)
            if stopping:
                return

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            count = min(self.batch_size, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def _settle(self, count: int) -> None:
        with self._flushed:
            self._done += count
            self._flushed.notify_all()

    def _drain(self) -> None:
        """Write batches until the buffer is empty or a write fails."""
        while True:
            batch = self._retry if self._retry is not None else self._take()
            if not batch:
                return
            self._retry = None
            try:
                self._write(batch)
            except Exception as error:
                self._attempts += 1
                with self._flushed:
                    self._failures += 1
                    self._flushed.notify_all()  # flush() stops waiting
                if self._attempts < MAX_ATTEMPTS:
                    self._retry = batch
                else:
                    self._attempts = 0
                    with self._lock:
                        self.dropped += len(batch)
                        self._unreported += len(batch)
                    self._settle(len(batch))
                self._dispose_engine()
                self._report(error)
                return
            self._attempts = 0
            self._failures = 0
            self.written += len(batch)
            self._wrote_since_prune = True
            self._settle(len(batch))

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            unreported = self._unreported
        rows = batch
        if unreported:
            rows = [*batch, self._dropped_row(unreported)]
        with self._io:
            if self._engine is None:
                self._engine = make_log_engine(self.url, service=self.service, timeout=self.timeout)
            with self._engine.begin() as connection:
                connection.execute(insert(ServiceLog), rows)
        if unreported:
            with self._lock:
                self._unreported -= unreported

    def _dropped_row(self, count: int) -> dict[str, Any]:
        return {
            "time": datetime.now(UTC),
            "service": self.service,
            "host": self.host,
            "pid": os.getpid(),
            "level": logging.WARNING,
            "logger": __name__,
            "message": f"{count} service log records of this process were dropped "
            f"(buffer full or database unavailable); {self.dropped} since it started",
            "job_id": None,
        }

    def _maybe_prune(self) -> None:
        if not self._wrote_since_prune or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.prune_every
        self._wrote_since_prune = False
        with self._io:
            if self._engine is None:
                return
            queries.prune(
                self._engine, max_rows=self.max_rows, max_age_seconds=self.max_age_seconds
            )

    def _dispose_engine(self) -> None:
        """After a failure: the next try connects afresh (the connection may be broken)."""
        with self._io:
            engine, self._engine = self._engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.dispose()

    def _report(self, error: Exception) -> None:
        """Say on stdout (rarely) that records are being lost, and why."""
        now = time.monotonic()
        if now - self._reported_at < REPORT_EVERY_SECONDS:
            return
        self._reported_at = now
        logger.warning(
            "service logs: writing to the database failed (%s); %d records dropped so far",
            bounded(str(error).splitlines()[0] if str(error) else type(error).__name__, 300),
            self.dropped,
        )

    # ---- fork ------------------------------------------------------------------------
    def _before_fork(self) -> bool:
        return self._io.acquire(timeout=FORK_WAIT_SECONDS)

    def _after_fork_in_parent(self, held: bool) -> None:
        if held:
            self._io.release()

    def _after_fork_in_child(self) -> None:
        engine = self._engine
        self._start_fresh()
        if engine is not None:
            # Drop the parent's connections without closing them: they are the parent's.
            engine.dispose(close=False)


_HANDLERS: weakref.WeakSet[ServiceLogHandler] = weakref.WeakSet()
_HELD: list[ServiceLogHandler] = []


def _before_fork() -> None:
    _HELD.clear()
    for handler in list(_HANDLERS):
        if handler._before_fork():
            _HELD.append(handler)


def _after_fork_in_parent() -> None:
    for handler in _HELD:
        handler._after_fork_in_parent(True)
    _HELD.clear()


def _after_fork_in_child() -> None:
    _HELD.clear()
    for handler in list(_HANDLERS):
        handler._after_fork_in_child()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _flush_then_terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM while no one else handles it: write the buffered records, then end as
    SIGTERM would have (no atexit runs on a signal's default action)."""
    for handler in list(_HANDLERS):
        with contextlib.suppress(Exception):
            handler.wait_written()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def install(service: str, settings: Settings) -> ServiceLogHandler | None:
    """Add the handler to the root logger of this `service` process, if
    `SUBMITTER_SERVICE_LOG_ENABLED`; return it."""
    if not settings.service_log_enabled:
        return None
    handler = ServiceLogHandler(
        service,
        settings.db_url,
        level=settings.service_log_level,
        max_rows=settings.service_log_max_rows,
        max_age_seconds=settings.service_log_max_age_seconds,
    )
    logging.getLogger().addHandler(handler)
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        # Uvicorn handles SIGTERM while it serves, then restores the handler it found and
        # raises the signal again: with the default one, the API would die with its last
        # second of records (its shutdown) unwritten. Celery (worker, beat) exits normally.
        signal.signal(signal.SIGTERM, _flush_then_terminate)
    if service == "worker":
        # A pool child ends with os._exit (no atexit): flush its last records first.
        from celery.signals import worker_process_shutdown

        def flush_child(**_: Any) -> None:
            handler.flush()

        worker_process_shutdown.connect(flush_child, weak=False)
    return handler
