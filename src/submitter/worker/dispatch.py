"""Sending a job's wake-up message: the job id, to the queue of its kind."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

RUN_JOB_TASK = "submitter.run_job"
RECONCILE_TASK = "submitter.reconcile"
HPC_MONITOR_TASK = "submitter.hpc_monitor"
SCHEDULES_TASK = "submitter.schedules"
HPC_CLEANUP_TASK = "submitter.hpc_cleanup"

# Fail fast when the broker is down: the job is in the database already and the
# reconciler will send its message later. The HTTP request must not hang.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


def send_job(celery: Celery, job_id: str, queue: str) -> None:
    send_jobs(celery, [(job_id, queue)])


def send_jobs(celery: Celery, jobs: Sequence[tuple[str, str]]) -> None:
    """Send the messages of (job id, queue) pairs through one producer: one broker
    connection and channel for all of them, not one acquired from the pool per message."""
    with celery.producer_or_acquire() as producer:
        for job_id, queue in jobs:
            celery.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=queue,
                producer=producer,
                retry=True,
                retry_policy=_RETRY_POLICY,
            )
