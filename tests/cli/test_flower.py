"""`submitter flower` on the scaled-out stack (PostgreSQL + Redis): basic auth always on,
live workers, and the task history of real jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.cli.test_cli import _free_port, run
from tests.conftest import Process, eventually, make_backend, make_stack


def test_flower_needs_a_password(tmp_path: Path) -> None:
    with make_backend("embedded", tmp_path) as backend:
        refused = run(backend.env, "flower")
    assert refused.returncode == 2
    assert "SUBMITTER_FLOWER_PASSWORD" in refused.stderr


def test_flower_shows_workers_and_tasks_behind_basic_auth(tmp_path: Path) -> None:
    with make_backend("postgres-redis", tmp_path) as backend:
        port = _free_port()
        backend.env.update(
            SUBMITTER_FLOWER_PORT=str(port),
            SUBMITTER_FLOWER_USER="ops",
            SUBMITTER_FLOWER_PASSWORD="flower-test-password",
        )
        with make_stack(backend, beat=False) as stack:
            flower = Process(backend, "flower")
            stack.processes.append(flower)
            url = f"http://127.0.0.1:{port}"

            def answers() -> int | None:
                try:
                    return httpx.get(url, timeout=2).status_code
                except httpx.TransportError:
                    return None

            assert eventually(answers, timeout=60) == 401, flower.tail()
            wrong = httpx.get(f"{url}/api/workers", auth=("ops", "guess"))
            assert wrong.status_code == 401
            auth = ("ops", "flower-test-password")
            assert httpx.get(url, auth=auth).status_code == 200

            workers = eventually(
                lambda: httpx.get(f"{url}/api/workers", params={"refresh": 1}, auth=auth).json()
            )
            assert any(name.startswith("celery@") for name in workers), workers

            # Flower turns on task events in the workers; then a job's run is in its history.
            def task_of(job_id: str) -> list[dict[str, Any]]:
                tasks = httpx.get(f"{url}/api/tasks", auth=auth).json()
                return [t for t in tasks.values() if job_id in (t.get("args") or "")]

            def a_recorded_run() -> list[dict[str, Any]]:
                job = stack.submit(spec={"message": "seen by flower"})
                stack.wait(job["id"])
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    if found := task_of(job["id"]):
                        return found
                    time.sleep(0.5)
                return []  # events were not on yet when it ran: another job

            tasks = eventually(a_recorded_run, timeout=60)
            assert tasks[0]["name"] == "submitter.run_job"
            assert tasks[0]["state"] == "SUCCESS"
            assert "flower-test-password" not in flower.tail(400)
