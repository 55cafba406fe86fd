"""Named locks: a second holder waits until the first lets go, on every backend."""

from __future__ import annotations

import threading
import time

import pytest

from submitter.locks import LockWaitStopped, exclusive
from submitter.runtime import Runtime
from tests.conftest import Backend


def _runtime(backend: Backend, use_redis: bool) -> Runtime:
    settings = backend.settings
    if use_redis:
        if not settings.broker.startswith("redis://"):
            pytest.skip("the Redis lock needs a Redis backend")
        settings = settings.model_copy(update={"redis_url": settings.broker})
    return Runtime(settings)


@pytest.mark.parametrize("use_redis", [False, True], ids=["database-or-file", "redis"])
def test_second_holder_waits_for_the_first(backend: Backend, use_redis: bool) -> None:
    first, second = _runtime(backend, use_redis), _runtime(backend, use_redis)
    events: list[str] = []
    waited = threading.Event()
    held = threading.Event()

    def hold_first() -> None:
        with exclusive(first, "model:credit"):
            events.append("first in")
            held.set()
            waited.wait(10)
            time.sleep(0.3)
            events.append("first out")

    thread = threading.Thread(target=hold_first)
    thread.start()
    held.wait(10)
    with exclusive(second, "model:credit", poll=0.05, on_wait=waited.set):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]
    # Another name is not blocked at all.
    with exclusive(second, "model:other"):
        pass
    first.close()
    second.close()


def test_waiting_can_be_stopped(backend: Backend) -> None:
    holder, waiter = _runtime(backend, False), _runtime(backend, False)
    with (
        exclusive(holder, "model:busy"),
        pytest.raises(LockWaitStopped),
        exclusive(waiter, "model:busy", poll=0.05, should_stop=lambda: True),
    ):
        pass
    holder.close()
    waiter.close()
