"""The per-process handles built from settings: database engine, sessions, Celery client.

API, worker and CLI each build one Runtime; nothing else holds global connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from submitter.config import Settings
from submitter.db.session import SQLITE_BEGIN, make_engine, make_sessionmaker, transaction

if TYPE_CHECKING:
    from celery import Celery

    from submitter.storage import ArtifactStore


class Runtime:
    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        if settings.is_embedded_db:
            settings.ensure_home()
        self.engine = make_engine(settings.db_url)
        self.sessions = make_sessionmaker(self.engine)
        #: For read-only work: on SQLite these do not take the write lock.
        self.reads = make_sessionmaker(self.engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}))
        #: For a single statement that is its whole transaction (the worker's claim), used
        #: as `autocommit.begin()`: no BEGIN and COMMIT round trips on PostgreSQL. SQLite
        #: keeps its BEGIN IMMEDIATE: there a transaction costs no round trip, and the
        #: write lock must be taken first.
        self.autocommit = (
            self.engine
            if self.engine.dialect.name == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        if celery is not None:
            self.__dict__["celery"] = celery

    @cached_property
    def celery(self) -> Celery:
        """A Celery app for sending messages (and, in a worker, for running tasks)."""
        from submitter.worker.app import create_celery_app

        return create_celery_app(self.settings)

    @cached_property
    def store(self) -> ArtifactStore:
        """The artifact store (local folder or S3) for datasets and job files."""
        from submitter.storage import open_store

        return open_store(self.settings)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.sessions) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
