"""Engine and session factory, with the SQLite settings that make concurrent processes safe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

#: Execution option naming the SQLite BEGIN mode (IMMEDIATE unless set to DEFERRED).
SQLITE_BEGIN = "submitter_sqlite_begin"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine. On SQLite: WAL, a long busy timeout and BEGIN IMMEDIATE.

    The API, the worker processes and beat all write the same SQLite file. A deferred
    transaction that reads and then writes fails at once with "database is locked" when
    another process wrote in between; taking the write lock at BEGIN makes SQLite wait on
    its busy timeout instead, so writes queue up rather than fail. Sessions that only read
    ask for DEFERRED through the `SQLITE_BEGIN` execution option.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # Read-only sessions (Runtime.reads) begin DEFERRED: WAL lets them read beside
            # a writer, and they must not queue for the write lock (bench/predict.py).
            mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # No pool_pre_ping: it costs a round trip on every checkout (about 15% of a job's
    # worker time in bench/dispatch.py). A connection broken by a server restart fails one
    # transaction; the API answers 5xx once, and a worker's job is re-sent by the reconciler.
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session


def rows_changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE and return how many rows it changed.

    The engine's correctness rests on conditional updates ("set running where still
    queued"); the row count says whether this process won.
    """
    result = session.execute(statement)
    return cast(CursorResult[Any], result).rowcount
