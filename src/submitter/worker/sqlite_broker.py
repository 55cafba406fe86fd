"""The embedded broker: kombu's SQLAlchemy transport on SQLite, polling faster.

kombu's virtual transports sleep `polling_interval` (1 s by default) whenever a poll finds
nothing it may take, which includes every poll while the worker's prefetch slots are
full. With prefetch 1 that is most polls, and the embedded stack then ran about 4 jobs/s.
The SQLAlchemy transport passes every transport option to `create_engine()`, so the
interval cannot be set as an option; a subclass under its own URL scheme sets it.
`sqla+sqlite:///…` stays the URL users write; `broker_url()` maps it.

The subclass also makes the channel safe to call from several threads (see `Channel`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport
from sqlalchemy.exc import IntegrityError, OperationalError

SCHEME = "submitter-sqla"
POLLING_INTERVAL = 0.05


class Channel(SQLAlchemyChannel):  # type: ignore[misc]
    """kombu's channel with its session serialised between threads, and two races between
    processes on a fresh broker file mended.

    Threads: kombu's channel keeps one SQLAlchemy session, which must not be used by two
    threads at once. A worker's consumer thread polls it (`_get`) all the time, and Celery
    5.7 runs ack/reject callbacks at once in whatever thread completes the task
    (`Consumer.call_soon_ack`): for a pool process that died (a cancelled job killed after
    its grace period), billiard's supervisor thread marks the job lost about 10 s later
    (`LOST_WORKER_TIMEOUT`) and the reject-and-requeue writes the message back (`_put`) in
    that thread. When the two met, the session's state machine broke
    (IllegalStateChangeError: `_prepare_impl()` is already in progress) and the worker
    stopped with "Unrecoverable error". Every use of the session goes through one lock per
    channel: SQLite takes one writer at a time anyway, and each use is a short transaction.
    (tests/worker/test_cancel_kills.py, tests/worker/test_sqlite_broker.py)

    Processes: kombu guards its "check, then create" steps with a lock that only holds
    within one process; two workers starting together on a new broker file both create, and
    the loser stopped with "Unrecoverable error" (tests/worker/test_sqlite_broker.py).
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        # Reentrant: `_put` and `_get` call `_get_or_create`. Made before kombu's
        # constructor, which may already declare queues.
        self._session_lock = threading.RLock()
        super().__init__(connection, **kwargs)

    def _get(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        with self._session_lock:
            return super()._get(queue, *args, **kwargs)

    def _put(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._session_lock:
            super()._put(queue, *args, **kwargs)

    def _purge(self, queue: str) -> int:
        with self._session_lock:
            return int(super()._purge(queue))

    def _size(self, queue: str) -> int:
        with self._session_lock:
            return int(super()._size(queue))

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        with self._session_lock:
            super()._new_queue(queue, **kwargs)

    def _open(self) -> Any:
        """The tables: another process may create them between kombu's check and its
        CREATE TABLE ("table kombu_message already exists"). Then they exist: check again."""
        for attempt in range(5):
            try:
                return super()._open()
            except OperationalError as error:
                if "already exists" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _get_or_create(self, queue: str) -> Any:
        """The queue's row: another process may insert it between kombu's check and its
        INSERT (IntegrityError). Then take that row."""
        with self._session_lock:
            try:
                return super()._get_or_create(queue)
            except IntegrityError:
                self.session.rollback()
                query = self.session.query(self.queue_cls)
                return query.filter(self.queue_cls.name == queue).one()


class Transport(SQLAlchemyTransport):  # type: ignore[misc]
    Channel = Channel
    polling_interval = POLLING_INTERVAL


TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")


def broker_url(url: str) -> str:
    """The URL kombu gets: `sqla+…` brokers use the faster-polling subclass."""
    if url.startswith("sqla+"):
        return f"{SCHEME}+{url.removeprefix('sqla+')}"
    return url
