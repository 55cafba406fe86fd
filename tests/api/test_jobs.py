"""The job API on each backend, with a real worker and beat: states, idempotency,
dependencies, cancel, auth and validation."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import func, select

from submitter.db.models import Job
from tests.conftest import Stack


def test_echo_job_goes_queued_running_succeeded(stack: Stack) -> None:
    job = stack.submit(spec={"message": "hello", "sleep_seconds": 1})
    assert job["state"] == "queued"
    assert job["spec"] == {"message": "hello", "sleep_seconds": 1.0, "fail": False}
    running = stack.wait(job["id"], lambda j: j["state"] != "queued")
    assert running["state"] in ("running", "succeeded")
    done = stack.wait(job["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == {"message": "hello", "sleep_seconds": 1.0, "fail": False}
    assert done["attempts"] == 1
    assert done["progress"] == 1.0
    assert done["started_at"] <= done["finished_at"]
    lines = stack.logs(job["id"])
    assert "echo: hello" in lines
    assert lines[-1] == "finished: succeeded"


def test_failing_job_records_short_error_and_traceback_in_log(stack: Stack) -> None:
    job = stack.submit(spec={"message": "boom", "fail": True})
    done = stack.wait(job["id"])
    assert done["state"] == "failed"
    assert done["error"] == "EchoFailed: echo was asked to fail: boom"
    assert done["result"] is None
    assert any(line.startswith("Traceback") for line in stack.logs(job["id"]))


def test_idempotency_key_returns_the_first_job(stack: Stack) -> None:
    key = f"nightly-{uuid.uuid4()}"
    body = {"kind": "echo", "spec": {"message": "once"}, "idempotency_key": key}
    first = stack.api.post("/api/v1/jobs", json=body, headers=stack.headers("user"))
    again = stack.api.post("/api/v1/jobs", json=body, headers=stack.headers("user"))
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # The key is scoped to the API key: another caller gets its own job.
    other = stack.api.post("/api/v1/jobs", json=body, headers=stack.headers("admin"))
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]
    with stack.runtime.sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Job).where(Job.idempotency_key == key)
        )
    assert count == 2


def test_dependent_job_starts_after_its_dependency_succeeded(stack: Stack) -> None:
    first = stack.submit(spec={"message": "first", "sleep_seconds": 1.5})
    second = stack.submit(spec={"message": "second"}, depends_on=[first["id"]])
    assert second["state"] == "queued"
    assert second["phase"] == "waiting"
    assert second["depends_on"] == [first["id"]]
    first_done = stack.wait(first["id"])
    second_done = stack.wait(second["id"])
    assert first_done["state"] == second_done["state"] == "succeeded"
    assert second_done["started_at"] >= first_done["finished_at"]


def test_failed_dependency_fails_the_chain_naming_it(stack: Stack) -> None:
    a = stack.submit(spec={"message": "a", "fail": True})
    b = stack.submit(spec={"message": "b"}, depends_on=[a["id"]])
    c = stack.submit(spec={"message": "c"}, depends_on=[b["id"]])
    assert stack.wait(a["id"])["state"] == "failed"
    b_done = stack.wait(b["id"])
    c_done = stack.wait(c["id"])
    assert b_done["state"] == "failed"
    assert b_done["error"] == f"dependency {a['id']} failed"
    assert c_done["state"] == "failed"
    assert c_done["error"] == f"dependency {b['id']} failed"
    assert b_done["started_at"] is None and c_done["started_at"] is None


def test_depending_on_an_already_failed_job_fails_at_once(stack: Stack) -> None:
    a = stack.submit(spec={"message": "a", "fail": True})
    stack.wait(a["id"])
    b = stack.submit(spec={"message": "b"}, depends_on=[a["id"]])
    assert b["state"] == "failed"
    assert a["id"] in b["error"]


def test_cancelled_dependency_cancels_dependents(stack: Stack) -> None:
    a = stack.submit(spec={"message": "a", "sleep_seconds": 30})
    b = stack.submit(spec={"message": "b"}, depends_on=[a["id"]])
    response = stack.api.post(f"/api/v1/jobs/{a['id']}/cancel", headers=stack.headers("user"))
    assert response.status_code == 200
    b_done = stack.wait(b["id"])
    assert b_done["state"] == "cancelled"
    assert b_done["message"] == f"dependency {a['id']} was cancelled"


def test_cancelled_queued_job_never_starts(stack: Stack) -> None:
    blocker = stack.submit(spec={"message": "blocker", "sleep_seconds": 1})
    queued = stack.submit(spec={"message": "never"}, depends_on=[blocker["id"]])
    response = stack.api.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=stack.headers("user"))
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert stack.wait(blocker["id"])["state"] == "succeeded"
    time.sleep(3)  # give the reconciler (every 1 s) a few rounds to do the wrong thing
    final = stack.job(queued["id"])
    assert final["state"] == "cancelled"
    assert final["started_at"] is None
    assert final["attempts"] == 0
    assert "echo: never" not in stack.logs(queued["id"])


def test_cancel_running_job_stops_it(stack: Stack) -> None:
    job = stack.submit(spec={"message": "long", "sleep_seconds": 60})
    stack.wait(job["id"], lambda j: j["state"] == "running")
    response = stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("user"))
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    # The worker notices through its heartbeat and stops the run function.
    stack.wait(
        job["id"],
        lambda _: any("stopped (cancelled)" in line for line in stack.logs(job["id"])),
        timeout=15,
    )
    final = stack.job(job["id"])
    assert final["state"] == "cancelled"
    assert final["result"] is None
    assert "echo: long" not in stack.logs(job["id"])


def test_cancel_finished_job_is_a_conflict(stack: Stack) -> None:
    job = stack.submit(spec={"message": "quick"})
    stack.wait(job["id"])
    response = stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("user"))
    assert response.status_code == 409
    assert "already succeeded" in response.json()["detail"]


def test_list_filters_and_pages(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = [stack.submit(spec={"message": f"{tag}-{i}"})["id"] for i in range(3)]
    for job_id in ids:
        stack.wait(job_id)
    page = stack.api.get(
        "/api/v1/jobs",
        params={"kind": "echo", "state": "succeeded", "limit": 2},
        headers=stack.headers("viewer"),
    ).json()
    assert len(page["items"]) == 2
    assert page["total"] >= 3
    assert all(j["state"] == "succeeded" and j["kind"] == "echo" for j in page["items"])
    second = stack.api.get(
        "/api/v1/jobs", params={"limit": 2, "offset": 2}, headers=stack.headers("viewer")
    ).json()
    assert {j["id"] for j in second["items"]}.isdisjoint(j["id"] for j in page["items"])


def test_unknown_job_is_404(stack: Stack) -> None:
    for path in ("", "/logs"):
        response = stack.api.get(f"/api/v1/jobs/{'0' * 32}{path}", headers=stack.headers("viewer"))
        assert response.status_code == 404
    response = stack.api.post(f"/api/v1/jobs/{'0' * 32}/cancel", headers=stack.headers("user"))
    assert response.status_code == 404


def test_a_unique_id_prefix_stands_for_the_job(stack: Stack) -> None:
    viewer = stack.headers("viewer")
    job = stack.submit(spec={"message": "prefix"})
    for ref in (job["id"][:8], job["id"][:20], job["id"].upper()[:12]):
        response = stack.api.get(f"/api/v1/jobs/{ref}", headers=viewer)
        assert response.status_code == 200, (ref, response.text)
        assert response.json()["id"] == job["id"]
        assert stack.api.get(f"/api/v1/jobs/{ref}/logs", headers=viewer).status_code == 200
    assert stack.api.get(f"/api/v1/jobs/{job['id'][:7]}", headers=viewer).status_code == 404
    assert stack.api.get("/api/v1/jobs/00000000", headers=viewer).status_code in (404,)
    assert stack.api.get(f"/api/v1/jobs/{job['id'][:8]}").status_code == 401  # key first


def test_an_ambiguous_prefix_names_the_matches(stack: Stack) -> None:
    from sqlalchemy import insert

    from submitter.db.types import utcnow

    prefix = uuid.uuid4().hex[:8]
    ids = [prefix + "0" * 24, prefix + "1" * 24]
    with stack.runtime.transaction() as session:
        for job_id in ids:
            session.execute(
                insert(Job).values(
                    id=job_id,
                    kind="echo",
                    queue="default",
                    state="succeeded",
                    spec={"message": "x"},
                    owner="test",
                    attempts=0,
                    max_attempts=1,
                    created_at=utcnow(),
                )
            )
    response = stack.api.get(f"/api/v1/jobs/{prefix}", headers=stack.headers("viewer"))
    assert response.status_code == 404
    assert (
        ids[0][:12] in response.json()["detail"] and "more characters" in response.json()["detail"]
    )
    one = stack.api.get(f"/api/v1/jobs/{prefix}1", headers=stack.headers("viewer"))
    assert one.status_code == 200 and one.json()["id"] == ids[1]


def test_a_finished_job_says_it_finished(stack: Stack) -> None:
    job = stack.submit(spec={"message": "steps", "sleep_seconds": 0.5})
    done = stack.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert (done["progress"], done["message"]) == (1.0, "finished")
