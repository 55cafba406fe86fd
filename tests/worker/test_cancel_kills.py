"""Cancelling running jobs whose pool processes must be killed, many times in a row, on the
embedded broker: the worker stays up and keeps running jobs.

Each kill hands the job's message back to the broker about 10 s later (billiard's lost
worker timeout), from the pool's supervisor thread, while the consumer thread polls the same
kombu channel. Both used the channel's one SQLAlchemy session, and the worker stopped with
"Unrecoverable error" (IllegalStateChangeError) on about one cancel in three.
"""

from __future__ import annotations

import glob
import os
import signal
import tempfile
from functools import partial

import pytest

from tests.conftest import Backend, Process, Stack, eventually, make_stack

#: Fewer cancels than pool slots: a slot stays free, so the consumer polls the broker while
#: the killed jobs' messages are handed back (a full worker does not poll: no race).
CONCURRENCY = 6
CANCELS = 5


def _worker_lines(worker: Process, text: str) -> int:
    """How many lines of the worker's output contain `text`; fails if the worker died."""
    output = worker.log_path.read_text(errors="replace")
    assert worker.popen.poll() is None, f"worker died ({worker.popen.returncode}):\n{worker.tail()}"
    return sum(text in line for line in output.splitlines())


def _killed(worker: Process, job_id: str) -> bool:
    return _worker_lines(worker, f"job {job_id} did not stop") > 0


def _redelivered(worker: Process, job_id: str) -> bool:
    """The killed job's message came back (rejected on worker loss) and was dropped."""
    return _worker_lines(worker, f"message for job {job_id} dropped") > 0


@pytest.mark.parametrize("fresh_backend", ["embedded"], indirect=True)
def test_many_cancels_that_kill_pool_processes_leave_the_worker_serving(
    fresh_backend: Backend,
) -> None:
    # Grace 0: every cancel of a running job kills its pool process (the "stuck" path).
    fresh_backend.env["SUBMITTER_CANCEL_GRACE_SECONDS"] = "0"
    with make_stack(fresh_backend, worker=False, beat=False) as stack:
        worker = stack.start("worker", f"--concurrency={CONCURRENCY}", "--queues=default")
        cancelled: list[str] = []
        for n in range(CANCELS):
            job = _submit_running(stack, f"stuck-{n}")
            response = stack.api.post(f"/api/v1/jobs/{job}/cancel", headers=stack.headers("user"))
            assert response.status_code == 200, response.text
            eventually(partial(_killed, worker, job), timeout=30)
            cancelled.append(job)
            # The killed process cleaned its job folder first: no `finally` runs after SIGKILL.
            left = glob.glob(os.path.join(tempfile.gettempdir(), f"submitter-job-{job}-*"))
            assert not left, left
        eventually(lambda: all(_redelivered(worker, j) for j in cancelled), timeout=60)
        after = stack.submit(spec={"message": "after the cancels"})
        assert stack.wait(after["id"], timeout=60)["state"] == "succeeded"
        assert all(stack.job(j)["state"] == "cancelled" for j in cancelled)
        assert _worker_lines(worker, "Unrecoverable error") == 0, worker.tail()
        # A warm shutdown of the main process alone: a SIGTERM to the whole group (the
        # teardown's) leaves the worker hanging until it is killed 20 s later.
        os.kill(worker.pid, signal.SIGTERM)
        worker.popen.wait(60)


def _submit_running(stack: Stack, message: str) -> str:
    job = stack.submit(spec={"message": message, "sleep_seconds": 600})
    stack.wait(job["id"], lambda j: j["state"] == "running", timeout=60)
    return str(job["id"])
