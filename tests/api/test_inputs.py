"""Inputs no backend can store and bodies past the limit: the same 4xx on every backend,
naming the field, and an error response that can always be written (submitter.api.inputs,
submitter.api.errors)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from submitter.api.app import create_app
from submitter.api.errors import MAX_ECHO_CHARS, echo, validation_errors
from submitter.db.models import Job
from tests.conftest import Stack


def _job_count(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def _post_raw(stack: Stack, path: str, body: str, method: str = "POST") -> Any:
    """Send `body` as written: json.dumps would refuse NaN, and escapes matter here."""
    return stack.api.request(
        method,
        path,
        content=body.encode("utf-8"),
        headers={**stack.headers("user"), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ('{"message": "a\\u0000b"}', ["body", "spec", "message"]),
        ('{"message": "x", "sleep_seconds": 0, "a\\u0000": 1}', ["body", "spec"]),
        ('{"message": "lone \\ud800 surrogate"}', ["body", "spec", "message"]),
        ('{"message": "x", "sleep_seconds": NaN}', ["body", "spec", "sleep_seconds"]),
        ('{"message": "x", "sleep_seconds": -Infinity}', ["body", "spec", "sleep_seconds"]),
        ('{"message": "x", "sleep_seconds": 1e400}', ["body", "spec", "sleep_seconds"]),
        (
            '{"message": "x", "sleep_seconds": 123456789012345678901}',
            ["body", "spec", "sleep_seconds"],
        ),
    ],
)
def test_text_and_numbers_no_backend_stores_are_422(
    stack: Stack, spec: str, loc: list[str]
) -> None:
    before = _job_count(stack)
    response = _post_raw(stack, "/api/v1/jobs", f'{{"kind": "echo", "spec": {spec}}}')
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert _job_count(stack) == before


def test_a_valid_surrogate_pair_and_escaped_backslash_are_fine(stack: Stack) -> None:
    body = '{"kind": "echo", "spec": {"message": "\\ud83d\\ude00 and \\\\u0000 as text"}}'
    response = _post_raw(stack, "/api/v1/jobs", body)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["message"] == "\U0001f600 and \\u0000 as text"


def test_nul_in_path_and_query_is_422(stack: Stack) -> None:
    viewer = stack.headers("viewer")
    response = stack.api.get("/api/v1/jobs/ab%00cd", headers=viewer)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "job_id"]
    response = stack.api.get("/api/v1/jobs", params={"kind": "echo\x00"}, headers=viewer)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "kind"]
    response = stack.api.get("/api/v1/models/m%00/versions", headers=viewer)
    assert response.status_code == 422, response.text


def test_nan_in_an_integer_field_is_a_422_that_can_be_written(stack: Stack) -> None:
    response = _post_raw(stack, "/api/v1/models/any/aliases/production", '{"version": NaN}', "PUT")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "version"]


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/api/v1/jobs", {"offset": 2**63}, ["query", "offset"]),
        ("/api/v1/datasets", {"offset": 10**30}, ["query", "offset"]),
        ("/api/v1/schedules", {"offset": 2**31}, ["query", "offset"]),
        ("/api/v1/models/m/versions/99999999999999999999", {}, ["path", "version"]),
        ("/api/v1/models/m/versions/2147483648", {}, ["path", "version"]),
    ],
)
def test_integers_past_the_columns_range_are_422(
    stack: Stack, path: str, params: dict[str, int], loc: list[str]
) -> None:
    response = stack.api.get(path, params=params, headers=stack.headers("viewer"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_integers_past_the_range_in_logs_predict_and_aliases_are_422(stack: Stack) -> None:
    job = stack.submit(spec={"message": "x"})
    viewer, user = stack.headers("viewer"), stack.headers("user")
    response = stack.api.get(
        f"/api/v1/jobs/{job['id']}/logs", params={"after": 2**63}, headers=viewer
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
        "query",
        "after",
    ]
    response = stack.api.post(
        "/api/v1/models/m/predict", params={"version": 2**31}, json={"rows": []}, headers=viewer
    )
    assert response.status_code == 422
    assert ["query", "version"] in [e["loc"] for e in response.json()["detail"]]
    response = stack.api.put(
        "/api/v1/models/m/aliases/production", json={"version": 2**31}, headers=user
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "version"]


@pytest.mark.parametrize("ref", ["x@99999999999999999999", "x@2147483648", "x@\u00b2", "x@\u0663"])
def test_a_dataset_version_that_cannot_exist_is_not_found(stack: Stack, ref: str) -> None:
    response = stack.api.get(f"/api/v1/datasets/{ref}", headers=stack.headers("viewer"))
    assert response.status_code == 404, response.text
    response = stack.api.post(
        "/api/v1/jobs",
        json={"kind": "describe", "spec": {"dataset": ref}},
        headers=stack.headers("user"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "spec", "dataset"]


def test_a_huge_rejected_value_is_echoed_short(stack: Stack) -> None:
    response = stack.api.post(
        "/api/v1/jobs", json={"kind": "k" * 1_000_000, "spec": {}}, headers=stack.headers("user")
    )
    assert response.status_code == 422
    assert len(response.content) < 2000, len(response.content)
    response = stack.api.post(
        "/api/v1/jobs",
        json={"spec": {f"key{i}": "v" * 10_000 for i in range(1000)}},
        headers=stack.headers("user"),
    )
    assert response.status_code == 422
    assert len(response.content) < 5000, len(response.content)


def test_a_body_over_the_limit_is_413(stack: Stack) -> None:
    settings = stack.backend.settings.model_copy(update={"max_request_bytes": 4096})
    with TestClient(create_app(settings)) as api:
        headers = stack.headers("user")
        big = {"kind": "echo", "spec": {"message": "x" * 5000}}
        response = api.post("/api/v1/jobs", json=big, headers=headers)
        assert response.status_code == 413, response.text
        assert "SUBMITTER_MAX_REQUEST_BYTES" in response.json()["detail"]

        def chunks() -> Any:  # no Content-Length: the limit holds while the body streams
            yield b'{"kind": "echo", "spec": {"message": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}}'

        response = api.post(
            "/api/v1/jobs",
            content=chunks(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 413, response.text
        small = api.post(
            "/api/v1/jobs", json={"kind": "echo", "spec": {"message": "x"}}, headers=headers
        )
        assert small.status_code == 202, small.text


# ---- pure logic of the error responses ---------------------------------------------------


def test_echo_makes_any_value_short_and_json_safe() -> None:
    values = [math.nan, math.inf, -math.inf, "\ud800", 10**40, b"\xff" * 10, "x" * 10_000]
    echoed = [echo(v) for v in values]
    json.dumps(echoed, allow_nan=False).encode("utf-8")  # neither raises
    assert len(echoed[-1]) == MAX_ECHO_CHARS + 1
    nested = echo({"a": [[[[1]]]], **{str(i): i for i in range(100)}})
    assert len(json.dumps(nested)) < 500


def test_validation_errors_never_carry_what_json_cannot() -> None:
    errors = validation_errors(
        [
            {
                "loc": ("body", 0, "\ud800"),
                "msg": "bad",
                "type": "t",
                "input": math.nan,
                "ctx": {"e": ValueError("x")},
            }
        ]
    )
    json.dumps(errors, allow_nan=False).encode("utf-8")
    assert errors[0]["input"] == "nan" and errors[0]["ctx"] == {"e": "x"}
