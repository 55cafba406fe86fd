"""Beat's task status on a real database: coalesced writes, failures counted, state."""

from __future__ import annotations

from pathlib import Path

from submitter.db.types import utcnow
from submitter.runtime import Runtime
from submitter.worker.beat_status import BeatStatus, BeatTaskView, list_tasks
from tests.conftest import make_backend


def test_failures_are_written_at_once_and_runs_coalesced(tmp_path: Path) -> None:
    with make_backend("embedded", tmp_path) as backend:
        runtime = Runtime(backend.settings)
        try:
            status = BeatStatus(runtime)

            def shown() -> BeatTaskView:
                return {t.name: t for t in list_tasks(runtime)}["reconcile"]

            status.record("reconcile", 1.0, utcnow(), 0.01, None)  # first run: written
            assert (shown().state, shown().runs) == ("ok", 1)
            for _ in range(3):  # within the coalescing period: counted, not written
                status.record("reconcile", 1.0, utcnow(), 0.01, None)
            assert shown().runs == 1
            status.record("reconcile", 1.0, utcnow(), 0.02, "OperationalError: no database")
            failing = shown()
            assert failing.state == "failing"
            assert failing.last_error == "OperationalError: no database"
            assert (failing.runs, failing.failures) == (5, 1)
            status.record("reconcile", 1.0, utcnow(), 0.01, None)  # recovered: written at once
            assert (shown().state, shown().runs, shown().failures) == ("ok", 6, 1)
        finally:
            runtime.close()
