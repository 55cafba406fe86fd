"""The Celery tasks: run a job by id, reconcile. Each worker process builds its own Runtime."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from billiard.process import current_process
from celery import Celery, Task
from celery.signals import worker_process_init

from submitter.runtime import Runtime
from submitter.worker.dispatch import RECONCILE_TASK, RUN_JOB_TASK, RUN_JOBS_TASK

logger = logging.getLogger(__name__)


def runtime_of(app: Celery) -> Runtime:
    """The Runtime of this process for `app`, created on first use (after any fork)."""
    runtime: Runtime | None = getattr(app, "submitter_runtime", None)
    if runtime is None:
        settings = app.conf["submitter_settings"]
        runtime = Runtime(settings, celery=app)
        app.submitter_runtime = runtime  # type: ignore[attr-defined]
    return runtime


_APPS: list[Celery] = []


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections.
    for app in _APPS:
        runtime: Runtime | None = getattr(app, "submitter_runtime", None)
        if runtime is not None:
            runtime.engine.dispose(close=False)
    # A new pool process often replaces one that was killed mid-job: its folders and its
    # sandboxes' control groups go.
    from submitter.jobs.context import sweep_folders
    from submitter.sandbox import cgroups

    sweep_folders()
    cgroups.sweep()


def register_tasks(app: Celery) -> None:
    _APPS.append(app)

    @app.task(name=RUN_JOB_TASK, bind=True, ignore_result=True)
    def run_job(self: Task, job_id: str) -> str:
        from submitter.worker.runner import run_job as run

        worker_name = f"{self.request.hostname or socket.gethostname()}/{os.getpid()}"
        in_child = current_process().name != "MainProcess"
        return run(runtime_of(app), job_id, worker_name, in_pool_child=in_child)

    @app.task(name=RUN_JOBS_TASK, bind=True, ignore_result=True)
    def run_jobs(self: Task, job_ids: list[str]) -> list[str]:
        """Several jobs of one batch, one after the other (see dispatch.send_jobs)."""
        from submitter.worker.runner import run_jobs as run

        worker_name = f"{self.request.hostname or socket.gethostname()}/{os.getpid()}"
        in_child = current_process().name != "MainProcess"
        return run(runtime_of(app), job_ids, worker_name, in_pool_child=in_child)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile() -> dict[str, int]:
        from submitter.worker.reconciler import reconcile as run_reconcile

        report = run_reconcile(runtime_of(app))
        return {
            "requeued_lost": len(report.requeued_lost),
            "failed_lost": len(report.failed_lost),
            "resent": len(report.resent),
        }
