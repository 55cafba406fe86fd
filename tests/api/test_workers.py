"""`GET /api/v1/workers` on each backend with real worker processes: a worker shows online
with its queues, pool size and running jobs; stopped after SIGTERM; offline after SIGKILL."""

from __future__ import annotations

from typing import Any

from tests.conftest import Backend, Stack, eventually, make_stack


def _workers(stack: Stack) -> dict[int, dict[str, Any]]:
    response = stack.api.get("/api/v1/workers", headers=stack.headers("viewer"))
    assert response.status_code == 200, response.text
    return {w["pid"]: w for w in response.json()["items"]}


def test_workers_report_themselves_and_their_jobs(stack: Stack) -> None:
    worker_pid = stack.processes[0].pid
    me = eventually(lambda: _workers(stack).get(worker_pid))
    assert me["state"] == "online"
    assert me["concurrency"] == 2
    assert set(me["queues"]) == {"default", "train", "hpc"}
    assert me["name"].startswith("celery@")
    job = stack.submit(spec={"message": "busy", "sleep_seconds": 3})
    busy = eventually(lambda: job["id"] in _workers(stack)[worker_pid]["running_jobs"])
    assert busy
    stack.wait(job["id"])
    assert job["id"] not in _workers(stack)[worker_pid]["running_jobs"]
    assert stack.api.get("/api/v1/workers").status_code == 401


def test_stopped_and_killed_workers(fresh_backend: Backend) -> None:
    with make_stack(fresh_backend, worker=False, beat=False) as stack:
        calm = stack.start("worker", "--concurrency=1", "--hostname=calm@%h")
        doomed = stack.start("worker", "--concurrency=1", "--hostname=doomed@%h")
        # Both start at once on a fresh embedded broker: a race in kombu's queue creation
        # used to stop one of them (see submitter.worker.sqlite_broker).
        eventually(lambda: {calm.pid, doomed.pid} <= _workers(stack).keys(), timeout=90)
        calm.stop()
        assert _workers(stack)[calm.pid]["state"] == "stopped"
        doomed.kill_group()
        # A killed worker says nothing: it turns offline when three heartbeats are missed
        # (SUBMITTER_JOB_LEASE_SECONDS=3 in tests: a heartbeat a second).
        offline = eventually(lambda: _workers(stack)[doomed.pid]["state"] == "offline", timeout=20)
        assert offline
        names = {w["name"] for w in _workers(stack).values()}
        assert any(n.startswith("calm@") for n in names)
        assert any(n.startswith("doomed@") for n in names)
