"""`submitter jobs watch` and `jobs submit --wait` follow the job's event stream: the log
lines as they come, then the job. Real `submitter api` and `submitter worker` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import _free_port, _wait_ready, run
from tests.conftest import Process, make_backend


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An embedded API and a worker as processes; yields the client environment."""
    with make_backend("embedded", tmp_path) as backend:
        port = _free_port()
        backend.env["SUBMITTER_API_PORT"] = str(port)
        processes = [Process(backend, "api"), Process(backend, "worker", "--concurrency=1")]
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url)
            yield {"SUBMITTER_URL": url, "SUBMITTER_API_KEY": backend.admin_key}
        finally:
            for process in processes:
                process.stop()


def test_watch_prints_the_log_lines_as_they_come_and_the_final_state(
    served: dict[str, str],
) -> None:
    spec = '{"message": "watch me", "sleep_seconds": 2}'
    job_id = run(served, "jobs", "submit", "echo", "--spec", spec).stdout.strip()
    watched = run(served, "jobs", "watch", job_id[:10])
    assert watched.returncode == 0, watched.stderr
    # The lines, in order, on stderr with the bar; the job's table on stdout.
    lines = [line for line in watched.stderr.splitlines() if " INFO " in line]
    assert [line.split(" INFO ", 1)[1].strip() for line in lines][-2:] == [
        "echo: watch me",
        "finished: succeeded",
    ]
    assert "started on " in lines[0]
    assert "100%" in watched.stderr
    assert "succeeded" in watched.stdout and job_id in watched.stdout
    assert "echo: watch me" not in watched.stdout

    # --wait --json: stdout is only the job, whatever the log says.
    submitted = run(
        served,
        "jobs",
        "submit",
        "echo",
        "--spec",
        '{"message": "boom", "fail": true}',
        "--wait",
        "--json",
    )
    assert submitted.returncode == 1
    assert '"state": "failed"' in submitted.stdout and "Traceback" not in submitted.stdout
    assert "Traceback" in submitted.stderr and "EchoFailed" in submitted.stderr


def test_watch_of_an_unknown_job_says_so(served: dict[str, str]) -> None:
    missing = run(served, "jobs", "watch", "0" * 32)
    assert missing.returncode == 1
    assert "404" in missing.stderr and "not found" in missing.stderr
