"""API keys and roles, and bad input: a clear 4xx naming the field, and nothing stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from submitter.db.models import Job
from submitter.security import revoke_key
from tests.conftest import Stack

ECHO = {"kind": "echo", "spec": {"message": "hi"}}


def _job_count(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_no_key_is_401(stack: Stack) -> None:
    response = stack.api.get("/api/v1/jobs")
    assert response.status_code == 401
    assert "missing API key" in response.json()["detail"]


def test_unknown_key_is_401(stack: Stack) -> None:
    response = stack.api.get("/api/v1/jobs", headers={"Authorization": "Bearer sk_nope"})
    assert response.status_code == 401


def test_viewer_reads_but_cannot_submit_or_cancel(stack: Stack) -> None:
    assert stack.api.get("/api/v1/jobs", headers=stack.headers("viewer")).status_code == 200
    response = stack.api.post("/api/v1/jobs", json=ECHO, headers=stack.headers("viewer"))
    assert response.status_code == 403
    assert "viewer" in response.json()["detail"]
    job = stack.submit(spec={"message": "x"})
    response = stack.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=stack.headers("viewer"))
    assert response.status_code == 403


def test_revoked_key_stops_working(stack: Stack) -> None:
    from submitter.security import Role, create_key

    with stack.runtime.transaction() as session:
        row, key = create_key(session, f"temp-{id(stack)}-{_job_count(stack)}", Role.user)
    headers = {"Authorization": f"Bearer {key}"}
    assert stack.api.get("/api/v1/jobs", headers=headers).status_code == 200
    with stack.runtime.transaction() as session:
        revoke_key(session, row.name)
    assert stack.api.get("/api/v1/jobs", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"kind": "nope", "spec": {}}, ["body", "kind"]),
        ({"kind": "echo", "spec": {}}, ["body", "spec", "message"]),
        (
            {"kind": "echo", "spec": {"message": "x", "sleep_seconds": "soon"}},
            ["body", "spec", "sleep_seconds"],
        ),
        (
            {"kind": "echo", "spec": {"message": "x", "sleep_seconds": -1}},
            ["body", "spec", "sleep_seconds"],
        ),
        ({"kind": "echo", "spec": {"message": "x", "colour": "red"}}, ["body", "spec", "colour"]),
        ({"kind": "echo", "spec": "not an object"}, ["body", "spec"]),
        ({"spec": {"message": "x"}}, ["body", "kind"]),
        ({**ECHO, "depends_on": ["f" * 32]}, ["body", "depends_on"]),
        ({**ECHO, "idempotency_key": ""}, ["body", "idempotency_key"]),
        ({**ECHO, "priority": 3}, ["body", "priority"]),
    ],
)
def test_bad_job_request_is_422_naming_the_field(
    stack: Stack, body: dict[str, object], loc: list[str]
) -> None:
    before = _job_count(stack)
    response = stack.api.post("/api/v1/jobs", json=body, headers=stack.headers("user"))
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert loc in locs, locs
    assert _job_count(stack) == before


def test_unknown_kind_message_lists_known_kinds(stack: Stack) -> None:
    response = stack.api.post(
        "/api/v1/jobs", json={"kind": "nope", "spec": {}}, headers=stack.headers("user")
    )
    message = response.json()["detail"][0]["msg"]
    listed = message.split("known kinds: ", 1)[1].split(", ")
    assert {"command", "describe", "echo", "sweep", "train"} <= set(listed)
    assert listed == sorted(listed)


def test_malformed_json_is_422(stack: Stack) -> None:
    response = stack.api.post(
        "/api/v1/jobs",
        content=b"{not json",
        headers={**stack.headers("user"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_bad_list_filter_is_422(stack: Stack) -> None:
    response = stack.api.get(
        "/api/v1/jobs", params={"state": "sleeping"}, headers=stack.headers("viewer")
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "state"]
