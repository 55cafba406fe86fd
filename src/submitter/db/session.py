"""Engine and session factory, with the SQLite settings that make concurrent processes safe."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
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

    On PostgreSQL: bounded connect and pool waits, TCP keepalives, and a check at each
    checkout that drops connections the server closed (see `_discard_if_hung_up`), so an
    outage fails fast and a restart does not fail the first requests after it.
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
    kwargs.setdefault("pool_recycle", 1800)
    # Waiting longer than this for a pooled connection is an outage, not a queue: the API
    # answers 503 (submitter.api.unavailable) instead of holding the request.
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    connect_args = dict(kwargs.pop("connect_args", {}))
    query = make_url(url).query
    for name, value in PSYCOPG_CONNECT_DEFAULTS.items():
        if name not in query:  # a value in the URL (?connect_timeout=20) wins
            connect_args.setdefault(name, value)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine, "checkout", _discard_if_hung_up)
    return engine


#: Seconds a PostgreSQL connect may take. psycopg's default is 130 s: with the server's
#: host unreachable (packets dropped, not refused), every request would hold a thread
#: that long and the client give up first. Overridable in the URL (`?connect_timeout=`).
CONNECT_TIMEOUT_SECONDS = 5
#: Seconds a request waits for a pooled connection when all are in use.
POOL_TIMEOUT_SECONDS = 10
#: libpq connection parameters added unless the URL sets them. TCP keepalives make the
#: kernel notice a server host that vanished without closing its connections (no FIN):
#: the idle socket then reports an error, which the checkout check below sees.
PSYCOPG_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _discard_if_hung_up(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: replace a pooled PostgreSQL connection the server closed.

    Why not `pool_pre_ping`: it sends a query and waits for its answer on every checkout,
    one round trip each (about 15% of a job's worker time in bench/dispatch.py, which has
    two checkouts per job). A server that restarts (or ends an idle session:
    `idle_session_timeout`, `pg_terminate_backend`) sends its pooled sessions a FATAL
    message and closes them, so each idle socket becomes readable. An idle connection in
    our pool has nothing else to read (we use no LISTEN), so one non-blocking `poll()` -
    a system call, no network traffic: about 3 us, against 85 us for pre-ping's round
    trip on loopback and a network round trip elsewhere - tells a dead connection from a
    live one. Raising
    `DisconnectionError` here makes SQLAlchemy drop this connection and check out a fresh
    one (its documented "pessimistic" disconnect handling), so the first requests after a
    restart succeed instead of failing on connections the restart broke.

    Not covered, and not worth a round trip on every checkout: a server host that vanished
    without closing its sockets before the keepalives expire; that transaction fails
    with a connection error (503 in the API; the reconciler re-sends a worker's job).
    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("connection closed")
    try:
        fileno = dbapi_connection.fileno()
    except Exception:  # psycopg raises once the connection is closed
        raise DisconnectionError("connection closed") from None
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    if poller.poll(0):  # readable, hung up (POLLHUP) or failed (POLLERR): the server is gone
        raise DisconnectionError("the server closed the idle connection")


def describe_database(url: str) -> str:
    """The database in words for error messages: backend, host and name; no credentials."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"PostgreSQL database {parsed.database or ''} at {where}".replace("  ", " ")


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
