"""`GET /api/v1/tasks` with a real beat: beat's built-in tasks show `never` before it runs,
`ok` while it runs, `late` after it stopped; and the age metric."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import Stack, eventually, make_backend, make_stack

NAMES = {"reconcile", "hpc_monitor", "schedules", "hpc_cleanup"}


def _tasks(stack: Stack) -> dict[str, dict[str, Any]]:
    response = stack.api.get("/api/v1/tasks", headers=stack.headers("viewer"))
    assert response.status_code == 200, response.text
    return {t["name"]: t for t in response.json()["items"]}


def test_beat_tasks_run_and_show_in_metrics(stack: Stack) -> None:
    def all_ok() -> dict[str, dict[str, Any]] | None:
        tasks = _tasks(stack)
        return tasks if all(t["state"] == "ok" for t in tasks.values()) else None

    ok = eventually(all_ok)
    assert set(ok) == NAMES
    assert all(t["runs"] >= 1 and t["failures"] == 0 for t in ok.values())
    assert ok["schedules"]["interval_seconds"] == 0.5  # FAST_TIMINGS
    text = stack.api.get("/metrics").text
    age = re.search(r'^submitter_beat_task_age_seconds\{task="reconcile"\} (\S+)$', text, re.M)
    assert age is not None and float(age.group(1)) < 60, text
    assert stack.api.get("/api/v1/tasks").status_code == 401


def test_never_then_ok_then_late(tmp_path: Path) -> None:
    with (
        make_backend("embedded", tmp_path) as backend,
        make_stack(backend, worker=False, beat=False) as stack,
    ):
        assert {t["state"] for t in _tasks(stack).values()} == {"never"}
        beat = stack.start("beat")
        eventually(lambda: all(t["state"] == "ok" for t in _tasks(stack).values()))
        beat.stop()
        # Three intervals (1 s here) and one coalescing period (5 s) later: late.
        late = eventually(lambda: _tasks(stack)["reconcile"]["state"] == "late", timeout=30)
        assert late
        assert _tasks(stack)["reconcile"]["beat"].endswith(f"/{beat.pid}")
