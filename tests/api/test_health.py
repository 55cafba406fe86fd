"""`/health`, `/ready` and `/metrics`."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from submitter.api.app import create_app
from tests.conftest import Backend, Stack


def test_health_needs_no_key(stack: Stack) -> None:
    response = stack.api.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_ready_checks_database_broker_and_storage(stack: Stack) -> None:
    response = stack.api.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "broker": "ok",
        "storage": "ok",
    }


def test_ready_is_503_naming_the_broker_when_it_is_down(backend: Backend) -> None:
    settings = backend.settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    with TestClient(create_app(settings)) as api:
        response = api.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["detail"] == "not ready: broker failing"
    assert body["database"] == "ok"
    assert body["broker"].startswith("error")


def test_metrics_show_requests_jobs_and_queues(stack: Stack) -> None:
    job = stack.submit(spec={"message": "counted"})
    stack.wait(job["id"])
    stack.api.get("/api/v1/jobs", headers=stack.headers("viewer"))
    text = stack.api.get("/metrics").text
    assert 'submitter_http_requests_total{method="GET",route="/api/v1/jobs",status="200"}' in text
    assert 'submitter_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    assert 'submitter_jobs{kind="echo",state="succeeded"}' in text
    assert 'submitter_queue_depth{queue="default"}' in text
    online = re.search(r'^submitter_workers\{state="online"\} (\S+)$', text, re.MULTILINE)
    assert online is not None and float(online.group(1)) >= 1, text
    assert 'submitter_schedules{state="enabled"}' in text
