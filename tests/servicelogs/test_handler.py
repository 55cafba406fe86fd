"""The service-log handler on a real SQLite file and a real PostgreSQL database: records
arrive with their fields, the buffer is bounded and drops are counted (and said in the
table), nothing the flusher logs is captured, a forked child's records arrive (and not
its parent's twice), a database that is away or locked costs records, never time or an
exception, and retention keeps the newest rows by count and age."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select

from submitter.config import load_settings
from submitter.db.migrate import upgrade
from submitter.db.models import ServiceLog
from submitter.db.types import utcnow
from submitter.logs import job_id_var
from submitter.servicelogs import service
from submitter.servicelogs.handler import MAX_MESSAGE_CHARS, ServiceLogHandler
from tests.conftest import eventually
from tests.services import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty metadata DB of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'submitter.db'}"
        upgrade(load_settings(home=tmp_path, database_url=url))
        yield url
    else:
        with postgres_database() as url:
            upgrade(load_settings(home=tmp_path, database_url=url))
            yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def host() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _logger(handler: logging.Handler) -> logging.Logger:
    """A logger of its own that only this handler hears."""
    log = logging.getLogger(f"tests.servicelogs.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    return log


def _rows(engine: Engine, host: str) -> list[ServiceLog]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ServiceLog).where(ServiceLog.host == host).order_by(ServiceLog.id)
        ).all()
    return list(rows)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


def test_records_arrive_with_their_fields(database_url: str, engine: Engine, host: str) -> None:
    handler = ServiceLogHandler("worker", database_url, host=host, level="INFO")
    log = _logger(handler)
    try:
        log.debug("below the handler's level")
        log.info("plain %s", "info")
        reset = job_id_var.set("job-from-context")
        try:
            log.warning("while a job runs")
        finally:
            job_id_var.reset(reset)
        log.error("named job", extra={"job_id": "job-from-extra"})
        try:
            raise ValueError("the cause")
        except ValueError:
            log.exception("it failed")
        assert handler.wait_written(10)
    finally:
        handler.close()
    rows = _rows(engine, host)
    assert [r.message.splitlines()[0] for r in rows] == [
        "plain info",
        "while a job runs",
        "named job",
        "it failed",
    ]
    assert [r.level for r in rows] == [20, 30, 40, 40]
    assert [r.job_id for r in rows] == [None, "job-from-context", "job-from-extra", None]
    assert {(r.service, r.host, r.pid, r.logger) for r in rows} == {
        ("worker", host, os.getpid(), log.name)
    }
    assert "Traceback (most recent call last)" in rows[3].message
    assert "ValueError: the cause" in rows[3].message
    assert all(r.time.tzinfo is not None for r in rows)
    assert handler.written == 4 and handler.dropped == 0


def test_long_messages_tracebacks_and_bad_text_are_bounded(
    database_url: str, engine: Engine, host: str
) -> None:
    handler = ServiceLogHandler("api", database_url, host=host)
    log = _logger(handler)
    try:
        log.info("x" * 100_000)
        log.info("NUL \x00 and a lone surrogate \udc80 are not storable")
        log.info("bad format %d", "not a number")

        def deep(n: int) -> None:
            if n == 0:
                raise RuntimeError("at the bottom")
            deep(n - 1)

        try:
            deep(400)
        except RuntimeError:
            log.exception("y" * 50_000)
        assert handler.wait_written(10)
    finally:
        handler.close()
    long, bad, unformattable, traceback = (r.message for r in _rows(engine, host))
    assert len(long) < MAX_MESSAGE_CHARS + 100
    assert long.endswith("(91808 more characters)")
    assert bad == "NUL \ufffd and a lone surrogate \ufffd are not storable"
    assert "bad format %d" in unformattable and "not a number" in unformattable
    assert len(traceback) < MAX_MESSAGE_CHARS + 200
    assert traceback.startswith("yyyy")  # the message's start...
    assert traceback.rstrip().endswith("RuntimeError: at the bottom")  # ...and the error


def test_the_buffer_is_bounded_and_drops_are_counted(
    database_url: str, engine: Engine, host: str
) -> None:
    # No flush on its own (an hour's interval, no batch ever full): only the buffer fills.
    handler = ServiceLogHandler(
        "beat", database_url, host=host, capacity=10, batch_size=1000, interval=3600
    )
    log = _logger(handler)
    try:
        for number in range(25):
            log.info("record %d", number)
        assert handler.dropped == 15
        assert handler.wait_written(10)
    finally:
        handler.close()
    rows = _rows(engine, host)
    assert [r.message for r in rows[:10]] == [f"record {n}" for n in range(10)]
    # The gap is said in the table itself, with the next batch that got through.
    assert len(rows) == 11
    assert rows[10].level == logging.WARNING
    assert rows[10].logger == "submitter.servicelogs.handler"
    assert rows[10].message.startswith("15 service log records of this process were dropped")


class _Witness(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_nothing_the_flusher_logs_is_captured(database_url: str, engine: Engine, host: str) -> None:
    """On the root logger, with SQLAlchemy logging every statement and the pool's every
    checkout: the flusher's own records would be written, and make more, without end."""
    handler = ServiceLogHandler("api", database_url, host=host, level=logging.DEBUG)
    witness = _Witness(logging.DEBUG)
    seen = witness.records
    root = logging.getLogger()
    root.addHandler(witness)
    noisy = [logging.getLogger(name) for name in ("sqlalchemy.engine", "sqlalchemy.pool")]
    before = [(root.level, [n.level for n in noisy])]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    try:
        logging.getLogger("tests.servicelogs").info("one")
        logging.getLogger("submitter.servicelogs.handler").warning("its own: not captured")
        assert handler.wait_written(10)
        logging.getLogger("tests.servicelogs").info("two")
        assert handler.wait_written(10)
        time.sleep(1.5)  # a flush interval more: nothing else comes
        assert handler.wait_written(10)
    finally:
        root.removeHandler(handler)
        root.removeHandler(witness)
        root.setLevel(before[0][0])
        for logger, level in zip(noisy, before[0][1], strict=True):
            logger.setLevel(level)
        handler.close()
    # The flusher did log (its statements), on its own thread...
    assert any(
        r.name.startswith("sqlalchemy.engine")
        and (r.threadName or "").startswith("submitter-servicelogs")
        for r in seen
    )
    # ...and none of it reached the table.
    rows = _rows(engine, host)
    assert [r.message for r in rows if r.logger.startswith("tests.")] == ["one", "two"]
    assert not [r for r in rows if r.logger.startswith(("sqlalchemy", "submitter.servicelogs"))]


def test_a_forked_child_writes_its_own_records_and_not_its_parents(
    database_url: str, engine: Engine, host: str
) -> None:
    handler = ServiceLogHandler("worker", database_url, host=host, interval=3600)
    log = _logger(handler)
    try:
        log.info("parent, before the fork")  # still in the buffer when the child is made
        assert handler._thread is not None and handler._thread.is_alive()
        pid = os.fork()
        if pid == 0:  # the child: its own buffer, thread and connection
            code = 1
            try:
                log.info("child")
                code = 0 if handler.wait_written(20) and handler.written == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        log.info("parent, after the fork")
        assert handler.wait_written(10)
    finally:
        handler.close()
    rows = _rows(engine, host)
    assert sorted((r.message, r.pid) for r in rows) == [
        ("child", pid),
        ("parent, after the fork", os.getpid()),
        ("parent, before the fork", os.getpid()),
    ]


def test_a_database_that_is_away_costs_records_not_time(tmp_path: Path, host: str) -> None:
    """PostgreSQL on a port nothing listens on: emit returns at once, never raises, and
    close returns within its bound; records beyond the buffer are dropped and counted."""
    url = f"postgresql+psycopg://submitter@127.0.0.1:{_free_port()}/none"
    handler = ServiceLogHandler("api", url, host=host, capacity=100, batch_size=10)
    log = _logger(handler)
    started = time.monotonic()
    for number in range(2000):
        log.info("record %d", number)
    emitted = time.monotonic() - started
    try:
        log.exception("no exception being handled: still fine")
        time.sleep(1.5)  # the flusher tries (and fails) meanwhile
        waited = time.monotonic()
        assert not handler.wait_written(10)  # returns at once: the database fails
        assert time.monotonic() - waited < 5
    finally:
        closing = time.monotonic()
        handler.close()
    assert time.monotonic() - closing < handler.close_timeout + 5
    assert emitted < 10, emitted  # microseconds each; a blocking emit would take minutes
    assert handler.dropped >= 2000 - 100 - 10  # all but the buffer and the batch on retry
    assert handler.written == 0


def test_an_sqlite_file_is_never_created(tmp_path: Path, host: str) -> None:
    missing = tmp_path / "not-migrated-yet.db"
    handler = ServiceLogHandler("api", f"sqlite:///{missing}", host=host)
    log = _logger(handler)
    try:
        log.info("before the migrations")
        assert not handler.wait_written(10)
    finally:
        handler.close()
    assert not missing.exists()


def test_records_wait_out_a_locked_sqlite_file(tmp_path: Path, host: str) -> None:
    """Another process holds the write lock for 3 s (a long job-engine transaction): emit
    does not wait for it, and the records arrive once it is released."""
    url = f"sqlite:///{tmp_path / 'submitter.db'}"
    upgrade(load_settings(home=tmp_path, database_url=url))
    holder = sqlite3.connect(tmp_path / "submitter.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    handler = ServiceLogHandler("worker", url, host=host)
    log = _logger(handler)
    try:
        started = time.monotonic()
        for number in range(100):
            log.info("record %d", number)
        assert time.monotonic() - started < 5
        time.sleep(3)  # the flusher's tries time out (1 s busy timeout) and back off
        assert handler.written == 0
        holder.execute("COMMIT")
        assert eventually(lambda: handler.written == 100, timeout=30)
    finally:
        holder.close()
        handler.close()
    engine = create_engine(url)
    try:
        rows = _rows(engine, host)
    finally:
        engine.dispose()
    assert [r.message for r in rows] == [f"record {n}" for n in range(100)]
    assert handler.dropped == 0


def _insert(engine: Engine, count: int, *, age: timedelta = timedelta(0)) -> None:
    at = utcnow() - age
    row = {"service": "api", "host": "h", "pid": 1, "level": 20, "logger": "l", "job_id": None}
    with engine.begin() as connection:
        connection.execute(
            insert(ServiceLog), [{**row, "time": at, "message": str(n)} for n in range(count)]
        )


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(ServiceLog)) or 0)


def test_retention_keeps_the_newest_rows_by_count_and_age(engine: Engine) -> None:
    _insert(engine, 30, age=timedelta(days=8))  # older than the week kept
    _insert(engine, 120)
    removed = service.prune(engine, max_rows=100, max_age_seconds=7 * 86400, chunk=25)
    assert removed == 50  # the 30 old ones go by both rules, 20 more by count
    assert _count(engine) == 100
    with engine.connect() as connection:
        ids = connection.scalars(select(ServiceLog.id).order_by(ServiceLog.id)).all()
        newest = connection.scalars(select(ServiceLog.message).order_by(ServiceLog.id)).all()
    assert newest == [str(n) for n in range(20, 120)]
    assert ids == sorted(ids)
    # Bounded work per prune: what is left over goes at the next one.
    _insert(engine, 100)
    assert service.prune(engine, max_rows=100, max_age_seconds=86400, chunk=10, max_chunks=3) == 30
    assert service.prune(engine, max_rows=100, max_age_seconds=86400, chunk=100) == 70
    assert _count(engine) == 100
    # Age alone: everything older than a minute goes, however few rows there are.
    assert (
        service.prune(engine, max_rows=1000, max_age_seconds=60, now=utcnow() + timedelta(hours=1))
        == 100
    )
    assert _count(engine) == 0


def test_the_handler_prunes_after_its_flushes(database_url: str, engine: Engine, host: str) -> None:
    handler = ServiceLogHandler(
        "api", database_url, host=host, max_rows=50, prune_every=0.0, batch_size=20
    )
    log = _logger(handler)
    try:
        for number in range(200):
            log.info("record %d", number)
        assert handler.wait_written(10)
        assert eventually(lambda: _count(engine) == 50, timeout=20)
    finally:
        handler.close()
    assert [r.message for r in _rows(engine, host)] == [f"record {n}" for n in range(150, 200)]
