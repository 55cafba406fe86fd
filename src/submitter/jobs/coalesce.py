"""Group commit for single submissions: requests that arrive while another is being
stored share the next transaction and the next publish.

`POST /api/v1/jobs` cost a transaction (three round trips and a WAL flush) and a broker
publish per job, and the worker a Celery message per job (bench/dispatch.py: 6.3 ms of
worker CPU per single job against 1.4 in a batch). Here the first request leads: it
stores what is waiting (its own job first) in one transaction, publishes the ready jobs
as `send_jobs` messages shared the way a batch's are, and hands the lead to the next
request waiting, if any. A lone request is not delayed: it leads at once, alone.

The API waits on its event loop (`submit_async`), not in a thread: only a request that
leads runs its group's store in a thread, so the others cost no thread-pool hop (that hop
was a tenth of the API's CPU per job in bench/dispatch.py). Sync callers (the console, the
beat) wait on a threading.Event; both kinds share one queue and pass the lead to each other.

Each request keeps its own answer. If the shared transaction fails on a request's content
(a reference that does not resolve, an idempotency race), every request of the group is
stored on its own, so an error names only the request that caused it and the others
succeed. A fault of the database itself fails every request of the group, as it would
have failed each of them: nothing of it was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from submitter.db.models import Job
from submitter.jobs.schemas import JobCreate
from submitter.runtime import Runtime

#: Most requests stored in one transaction.
MAX_GROUP = 100


@dataclass(eq=False)
class _Request:
    owner: str
    request: JobCreate
    schedule_id: str | None
    #: Called, from the leader's thread, once the request is stored or made the leader.
    wake: Callable[[], None]
    lead: bool = False
    done: bool = False
    answer: tuple[Job, bool] | None = None
    error: BaseException | None = None


class Coalescer:
    """Stores single submissions of one Runtime, a group at a time (see the module)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._leading = False

    def submit(
        self, owner: str, request: JobCreate, schedule_id: str | None = None
    ) -> tuple[Job, bool]:
        """Store one request (with whatever waits beside it); return (job, created)."""
        woken = threading.Event()
        item = _Request(owner, request, schedule_id, wake=woken.set)
        if not self._enqueue(item):
            woken.wait()  # stored by a leader, or made the leader
        if not item.done:
            self._lead()
        return _answer(item)

    async def submit_async(
        self, owner: str, request: JobCreate, schedule_id: str | None = None
    ) -> tuple[Job, bool]:
        """`submit` for a caller on an event loop. Shielded: a request whose caller went
        away is still stored (it was accepted), and a lead handed to it is still taken, so
        the queue never stalls."""
        return await asyncio.shield(self._submit_async(owner, request, schedule_id))

    async def _submit_async(
        self, owner: str, request: JobCreate, schedule_id: str | None
    ) -> tuple[Job, bool]:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        item = _Request(owner, request, schedule_id, wake=_waker(loop, woken))
        if not self._enqueue(item):
            await woken.wait()
        if not item.done:
            await loop.run_in_executor(None, self._lead)
        return _answer(item)

    def _enqueue(self, item: _Request) -> bool:
        """Queue the request; True if it leads at once (nobody was leading)."""
        with self._lock:
            self._waiting.append(item)
            if not self._leading:
                self._leading = item.lead = True
        return item.lead

    def _lead(self) -> None:
        """Store one group (it holds the leader's own request: the first one waiting),
        then pass the lead to the next request waiting, or end leading."""
        with self._lock:
            group = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
        try:
            self._store(group)
        finally:
            with self._lock:
                if self._waiting:
                    following = self._waiting[0]
                    following.lead = True
                    following.wake()
                else:
                    self._leading = False

    def _store(self, group: list[_Request]) -> None:
        from submitter.jobs.service import InvalidJob, store_together, submit_many

        try:
            answers = store_together(
                self.runtime, [(r.owner, r.request, r.schedule_id) for r in group]
            )
        except (InvalidJob, IntegrityError):
            answers = None  # one request spoiled the group: each on its own below
        except BaseException as error:  # the database or the broker: the same for all
            _settle(group, [None] * len(group), error)
            return
        if answers is None:
            for item in group:
                try:
                    [answer] = submit_many(
                        self.runtime,
                        item.owner,
                        [item.request],
                        schedule_id=item.schedule_id,
                        at=lambda _: ["body"],
                    )
                    _settle([item], [answer], None)
                except BaseException as error:
                    _settle([item], [None], error)
            return
        _settle(group, answers, None)


def _settle(group: list[_Request], answers: list[Any], error: BaseException | None) -> None:
    for item, answer in zip(group, answers, strict=True):
        item.answer, item.error, item.done = answer, error, True
        item.wake()


def _waker(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """Set `event` on its loop from the leader's thread."""

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits on it
            loop.call_soon_threadsafe(event.set)

    return wake


def _answer(item: _Request) -> tuple[Job, bool]:
    if item.error is not None:
        raise item.error
    assert item.answer is not None
    return item.answer


_COALESCERS: weakref.WeakKeyDictionary[Runtime, Coalescer] = weakref.WeakKeyDictionary()
_COALESCERS_LOCK = threading.Lock()


def coalescer(runtime: Runtime) -> Coalescer:
    """The Runtime's coalescer (one per Runtime: a process's API, beat or CLI)."""
    with _COALESCERS_LOCK:
        found = _COALESCERS.get(runtime)
        if found is None:
            found = _COALESCERS[runtime] = Coalescer(runtime)
        return found
