"""The embedded broker: kombu's SQLAlchemy transport on SQLite, polling faster.

kombu's virtual transports sleep `polling_interval` (1 s by default) whenever a poll finds
nothing it may take, which includes every poll while the worker's prefetch slots are
full. With prefetch 1 that is most polls, and the embedded stack then ran about 4 jobs/s.
The SQLAlchemy transport passes every transport option to `create_engine()`, so the
interval cannot be set as an option; a subclass under its own URL scheme sets it.
`sqla+sqlite:///…` stays the URL users write; `broker_url()` maps it.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport
from sqlalchemy.exc import IntegrityError, OperationalError

SCHEME = "submitter-sqla"
POLLING_INTERVAL = 0.05


class Channel(SQLAlchemyChannel):  # type: ignore[misc]
    """kombu's channel with two races between processes on a fresh broker file mended.

    kombu guards its "check, then create" steps with a lock that only holds within one
    process; two workers starting together on a new broker file both create, and the
    loser stopped with "Unrecoverable error" (tests/worker/test_sqlite_broker.py).
    """

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
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class Transport(SQLAlchemyTransport):  # type: ignore[misc]
    Channel = Channel
    polling_interval = POLLING_INTERVAL


TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")


def broker_url(url: str) -> str:
    """The URL kombu gets: `sqla+…` brokers use the faster-polling subclass."""
    if url.startswith("sqla+"):
        return f"{SCHEME}+{url.removeprefix('sqla+')}"
    return url
