"""Single submissions that arrive while another is being stored share its successor's
transaction (submitter.jobs.coalesce), on each backend with the session's real worker: each
request keeps its own job and answer, a bad request fails alone, an idempotency key repeated
within a group is one job, and concurrent POSTs each get their own job."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from submitter.db.models import Job
from submitter.jobs.coalesce import Coalescer, _Request
from submitter.jobs.schemas import JobCreate
from submitter.jobs.service import InvalidJob
from submitter.runtime import Runtime
from tests.conftest import Stack, eventually


class HeldCoalescer(Coalescer):
    """Holds its first group until released, so that the next requests queue behind it."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.release = threading.Event()
        self.groups: list[list[str]] = []

    def _store(self, group: list[_Request]) -> None:
        self.groups.append([r.request.spec["message"] for r in group])
        if len(self.groups) == 1:
            assert self.release.wait(30)
        super()._store(group)

    def queued(self) -> int:
        with self._lock:
            return len(self._waiting)


def _echo(message: str, **more: Any) -> JobCreate:
    return JobCreate(kind="echo", spec={"message": message}, **more)


def _submit_while_held(
    stack: Stack, first: JobCreate, then: list[JobCreate]
) -> tuple[HeldCoalescer, list[Any]]:
    """`first` leads and is held; `then` queue behind it; release; every answer or error."""
    coalescer = HeldCoalescer(stack.runtime)

    def one(request: JobCreate) -> Any:
        try:
            return coalescer.submit("tester", request)
        except InvalidJob as error:
            return error

    with ThreadPoolExecutor(len(then) + 1) as pool:
        leader = pool.submit(one, first)
        eventually(lambda: len(coalescer.groups) == 1, timeout=10)
        followers = [pool.submit(one, request) for request in then]
        eventually(lambda: coalescer.queued() == len(then), timeout=10)
        coalescer.release.set()
        return coalescer, [leader.result(30), *(f.result(30) for f in followers)]


def test_requests_queued_behind_a_leader_share_one_group(stack: Stack) -> None:
    coalescer, answers = _submit_while_held(stack, _echo("a"), [_echo(m) for m in "bcde"])
    assert coalescer.groups == [["a"], ["b", "c", "d", "e"]]
    jobs: list[Job] = [job for job, _ in answers]
    assert [created for _, created in answers] == [True] * 5
    assert len({job.id for job in jobs}) == 5
    for job, message in zip(jobs, "abcde", strict=True):
        done = stack.wait(job.id)
        assert (done["state"], done["result"]["message"]) == ("succeeded", message)


def test_a_bad_request_in_a_group_fails_alone(stack: Stack) -> None:
    unknown = "0" * 32
    _, answers = _submit_while_held(
        stack, _echo("lead"), [_echo("good 1"), _echo("bad", depends_on=[unknown]), _echo("good 2")]
    )
    lead, good_1, bad, good_2 = answers
    assert isinstance(bad, InvalidJob)
    assert [e["loc"] for e in bad.errors] == [["body", "depends_on"]]
    for answer in (lead, good_1, good_2):
        job, created = answer
        assert created
        assert stack.wait(job.id)["state"] == "succeeded"


def test_a_key_repeated_within_a_group_is_one_job(stack: Stack) -> None:
    key = "coalesced-key"
    then = [_echo("once", idempotency_key=key), _echo("twice", idempotency_key=key)]
    _, answers = _submit_while_held(stack, _echo("lead"), then)
    (_, _), (first, first_created), (second, second_created) = answers
    assert first.id == second.id
    assert (first_created, second_created) == (True, False)


@pytest.mark.parametrize("requests", [24])
def test_concurrent_posts_each_get_their_own_job(stack: Stack, requests: int) -> None:
    def post(n: int) -> str:
        response = stack.api.post(
            "/api/v1/jobs",
            json={"kind": "echo", "spec": {"message": f"concurrent {n}"}},
            headers=stack.headers("user"),
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(post, range(requests)))
    assert len(set(ids)) == requests
    for n, job_id in enumerate(ids):
        done = stack.wait(job_id)
        assert (done["state"], done["result"]["message"]) == ("succeeded", f"concurrent {n}")
        assert stack.logs(job_id).count("finished: succeeded") == 1


@pytest.fixture
def loop() -> Any:
    """An event loop running in its own thread, as the API's runs beside sync callers."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(10)
    running.close()


def _stored(stack: Stack, message: str) -> list[str]:
    with stack.runtime.sessions() as session:
        jobs = session.scalars(select(Job).where(Job.kind == "echo")).all()
        return [job.id for job in jobs if job.spec.get("message") == message]


def _async_behind_a_held_leader(
    coalescer: HeldCoalescer, pool: ThreadPoolExecutor, loop: Any, lead: str, queued: str
) -> tuple[Future[Any], Future[Any]]:
    """A sync request leads and is held; an async one (on `loop`) queues behind it."""
    leader = pool.submit(coalescer.submit, "tester", _echo(lead))
    eventually(lambda: len(coalescer.groups) == 1, timeout=10)
    waiting = asyncio.run_coroutine_threadsafe(
        coalescer.submit_async("tester", _echo(queued)), loop
    )
    eventually(lambda: coalescer.queued() == 1, timeout=10)
    return leader, waiting


def test_async_and_sync_requests_share_a_group(stack: Stack, loop: Any) -> None:
    coalescer = HeldCoalescer(stack.runtime)
    with ThreadPoolExecutor(2) as pool:
        leader, waiting = _async_behind_a_held_leader(coalescer, pool, loop, "sync lead", "async")
        follower = pool.submit(coalescer.submit, "tester", _echo("sync"))
        eventually(lambda: coalescer.queued() == 2, timeout=10)
        coalescer.release.set()
        answers = [leader.result(30), waiting.result(30), follower.result(30)]
    assert coalescer.groups == [["sync lead"], ["async", "sync"]]
    for (job, created), message in zip(answers, ["sync lead", "async", "sync"], strict=True):
        assert created
        assert stack.wait(job.id)["result"]["message"] == message


def test_an_async_request_whose_caller_went_away_is_stored_and_still_leads(
    stack: Stack, loop: Any
) -> None:
    """The lead passes to a request whose caller was cancelled: it must still store its
    group and pass the lead on, or every later submission would wait forever."""
    coalescer = HeldCoalescer(stack.runtime)
    with ThreadPoolExecutor(1) as pool:
        leader, gone = _async_behind_a_held_leader(coalescer, pool, loop, "lead", "caller gone")
        gone.cancel()  # the HTTP client hung up while its request waited
        coalescer.release.set()
        leader.result(30)
    eventually(lambda: len(_stored(stack, "caller gone")) == 1, timeout=30)
    later, created = coalescer.submit("tester", _echo("later"))  # leads: nobody else does
    assert created and stack.wait(later.id)["state"] == "succeeded"
    assert coalescer.groups == [["lead"], ["caller gone"], ["later"]]
