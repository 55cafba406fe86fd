"""The Celery app, configured so that no accepted job is lost.

- JSON only: messages carry a job id, never data, never pickles.
- Late acks + reject on worker loss + prefetch 1: a message is acknowledged only after its
  job ran; a worker that dies hands its message back to the broker.
- Visibility timeout (Redis, SQLite broker) longer than the longest job, so a slow job is
  not redelivered while it runs; redeliveries that happen anyway are dropped by the runner.
- No result backend: the database holds every result.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu import Exchange, Queue

from submitter.config import Settings
from submitter.worker.dispatch import (
    HPC_CLEANUP_TASK,
    HPC_MONITOR_TASK,
    RECONCILE_TASK,
    SCHEDULES_TASK,
)
from submitter.worker.sqlite_broker import broker_url

QUEUES = ("default", "train", "hpc")
#: Beat's built-in entries: name in SUBMITTER_SCHEDULER_TIMES → (task, queue). Beat runs
#: them itself (submitter.worker.beat); the queue only matters to another scheduler.
MAINTENANCE_ENTRIES = {
    "reconcile": (RECONCILE_TASK, "default"),
    "hpc_monitor": (HPC_MONITOR_TASK, "hpc"),
    "schedules": (SCHEDULES_TASK, "default"),
    "hpc_cleanup": (HPC_CLEANUP_TASK, "hpc"),
}


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("submitter", broker=broker_url(settings.broker), set_as_current=False)
    # kombu's SQLAlchemy transport hands every transport option to create_engine(), and
    # it has no visibility timeout (it deletes a message when it is read); the DB lease
    # covers lost runs there.
    transport_options: dict[str, object] = (
        {}
        if settings.broker.startswith("sqla+")
        else {"visibility_timeout": settings.visibility_timeout_seconds}
    )
    intervals = settings.maintenance_intervals
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_default_queue="default",
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_concurrency=settings.worker_concurrency,
        beat_schedule={
            f"submitter-{name.replace('_', '-')}": {
                "task": task,
                "schedule": timedelta(seconds=intervals[name]),
                "options": {"queue": queue, "expires": intervals[name]},
            }
            for name, (task, queue) in MAINTENANCE_ENTRIES.items()
        },
    )
    app.conf["submitter_settings"] = settings
    from submitter.worker.tasks import register_tasks

    register_tasks(app)
    return app
