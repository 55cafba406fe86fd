"""Named locks across processes and hosts: Redis when configured, else the database.

Used so that two trainings of one model never run at once: the second waits, it is never
dropped. Each backend releases the lock when its holder dies:

- Redis (`SUBMITTER_REDIS_URL`): a lock key with a short expiry, renewed by a thread
  while the holder lives;
- PostgreSQL: a session advisory lock on a connection of its own (closed with the process);
- SQLite (one host): a file lock in `SUBMITTER_HOME/locks` (released by the OS).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout
from sqlalchemy import text

from submitter.runtime import Runtime

REDIS_LEASE_SECONDS = 30


class LockWaitStopped(Exception):
    """`should_stop` said to give up waiting."""


@contextmanager
def exclusive(
    runtime: Runtime,
    name: str,
    *,
    poll: float = 0.5,
    should_stop: Callable[[], bool] = lambda: False,
    on_wait: Callable[[], None] = lambda: None,
) -> Iterator[None]:
    """Hold lock `name`; wait as long as it takes (or until `should_stop()`)."""
    settings = runtime.settings
    if settings.redis_url:
        lock_cm = _redis_lock(settings.redis_url, name, poll, should_stop, on_wait)
    elif runtime.engine.dialect.name == "postgresql":
        lock_cm = _postgres_lock(runtime, name, poll, should_stop, on_wait)
    else:
        lock_cm = _file_lock(runtime, name, poll, should_stop, on_wait)
    with lock_cm:
        yield


def _wait(
    try_acquire: Callable[[], bool],
    poll: float,
    should_stop: Callable[[], bool],
    on_wait: Callable[[], None],
) -> None:
    told = False
    while not try_acquire():
        if should_stop():
            raise LockWaitStopped()
        if not told:
            on_wait()
            told = True
        time.sleep(poll)


@contextmanager
def _redis_lock(
    url: str, name: str, poll: float, should_stop: Callable[[], bool], on_wait: Callable[[], None]
) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(url)
    lock = client.lock(f"submitter:lock:{name}", timeout=REDIS_LEASE_SECONDS)
    _wait(lambda: bool(lock.acquire(blocking=False)), poll, should_stop, on_wait)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(REDIS_LEASE_SECONDS / 3):
            lock.reacquire()

    renewer = threading.Thread(target=renew, name=f"lock-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        lock.release()
        client.close()


@contextmanager
def _postgres_lock(
    runtime: Runtime,
    name: str,
    poll: float,
    should_stop: Callable[[], bool],
    on_wait: Callable[[], None],
) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with runtime.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")

        def try_acquire() -> bool:
            return bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))

        _wait(try_acquire, poll, should_stop, on_wait)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextmanager
def _file_lock(
    runtime: Runtime,
    name: str,
    poll: float,
    should_stop: Callable[[], bool],
    on_wait: Callable[[], None],
) -> Iterator[None]:
    folder = runtime.settings.ensure_home() / "locks"
    folder.mkdir(exist_ok=True)
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    lock = FileLock(str(folder / f"{digest}.lock"))

    def try_acquire() -> bool:
        try:
            lock.acquire(timeout=0)
            return True
        except Timeout:
            return False

    _wait(try_acquire, poll, should_stop, on_wait)
    try:
        yield
    finally:
        lock.release()
