"""Sending a job's wake-up message: the job id, to the queue of its kind."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

RUN_JOB_TASK = "submitter.run_job"
#: One message for several jobs of a batch, run one after the other by one pool process.
RUN_JOBS_TASK = "submitter.run_jobs"
RECONCILE_TASK = "submitter.reconcile"
HPC_MONITOR_TASK = "submitter.hpc_monitor"
SCHEDULES_TASK = "submitter.schedules"
HPC_CLEANUP_TASK = "submitter.hpc_cleanup"

# Fail fast when the broker is down: the job is in the database already and the
# reconciler will send its message later. The HTTP request must not hang.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


def send_job(celery: Celery, job_id: str, queue: str) -> None:
    send_jobs(celery, [(job_id, queue)])


def send_jobs(celery: Celery, jobs: Sequence[tuple[str, str]], group: int = 1) -> None:
    """Send the messages of (job id, queue) pairs through one producer: one broker
    connection and channel for all of them, not one acquired from the pool per message.

    With `group` > 1, up to that many jobs of one queue share a message (RUN_JOBS_TASK):
    the broker and Celery's per-message work is paid once for them. Each job is still
    claimed and finished on its own, so a lost or repeated message changes nothing: the
    jobs it did not run stay `queued` and the reconciler re-sends them.
    """
    by_queue: dict[str, list[str]] = {}
    for job_id, queue in jobs:
        by_queue.setdefault(queue, []).append(job_id)
    with celery.producer_or_acquire() as producer:
        for queue, ids in by_queue.items():
            for start in range(0, len(ids), max(1, group)):
                chunk = ids[start : start + max(1, group)]
                celery.send_task(
                    RUN_JOB_TASK if len(chunk) == 1 else RUN_JOBS_TASK,
                    args=chunk if len(chunk) == 1 else [chunk],
                    queue=queue,
                    producer=producer,
                    retry=True,
                    retry_policy=_RETRY_POLICY,
                )
