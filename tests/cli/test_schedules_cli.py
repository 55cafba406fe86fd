"""`submitter schedules` as a user runs it: real API, worker and beat processes."""

from __future__ import annotations

import json
import time

from tests.cli.test_cli import embedded, run, served  # noqa: F401  (fixtures)
from tests.conftest import Backend, Process


def test_create_watch_pause_run_and_delete_a_schedule(
    embedded: Backend,  # noqa: F811
    served: dict[str, str],  # noqa: F811
) -> None:
    beat = Process(embedded, "beat")
    try:
        made = run(
            served,
            *("schedules", "create", "tick", "echo", "--spec", '{"message": "tick"}'),
            *("--every", "1", "--json"),
        )
        assert made.returncode == 0, made.stderr
        schedule = json.loads(made.stdout)
        assert schedule["interval_seconds"] == 1 and schedule["enabled"]

        deadline = time.monotonic() + 60
        while True:
            shown = run(served, "jobs", "list", "--schedule", schedule["id"], "--json")
            states = [j["state"] for j in json.loads(shown.stdout)["items"]]
            if "succeeded" in states:
                break
            assert time.monotonic() < deadline, (states, beat.tail())
            time.sleep(0.5)

        paused = run(served, "schedules", "pause", "tick")
        assert paused.returncode == 0, paused.stderr
        assert "paused" in paused.stdout and "next run: -" in paused.stdout

        listed = run(served, "schedules", "list")
        assert "tick" in listed.stdout and "every 1 s" in listed.stdout

        job_id = run(served, "schedules", "run", "tick").stdout.strip()
        waited = run(served, "jobs", "watch", job_id)
        assert waited.returncode == 0, waited.stdout + waited.stderr

        show = run(served, "schedules", "show", "tick")
        assert job_id in show.stdout and "succeeded" in show.stdout

        bad = run(served, "schedules", "create", "bad", "echo", "--cron", "every day")
        assert bad.returncode == 1
        assert "cron" in bad.stderr and "5 fields" in bad.stderr

        # The same beat's own tasks, as `submitter tasks` shows them.
        tasks = {t["name"]: t for t in json.loads(run(served, "tasks", "--json").stdout)}
        assert tasks["schedules"]["state"] == "ok" and tasks["schedules"]["runs"] >= 1
        assert "reconcile" in run(served, "tasks").stdout

        deleted = run(served, "schedules", "delete", "tick")
        assert deleted.returncode == 0, deleted.stderr
        assert run(served, "schedules", "show", "tick").returncode == 1
    finally:
        beat.stop()
