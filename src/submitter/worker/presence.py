"""Which workers exist: each `submitter worker` reports itself in the `workers` table.

The worker's main process writes its row when it is ready, refreshes `last_seen_at` on its
own event loop (Celery's timer: no extra thread in a process that forks pool children),
and marks it stopped on a clean shutdown. A worker that was killed simply stops being
seen: `online` means seen within three heartbeats. The API reads the table, so
`GET /api/v1/workers` works on every broker, the embedded SQLite one included (it has no
broadcast for Celery's `inspect`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import delete, select, update

from submitter import __version__
from submitter.db.models import Job, Worker
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.jobs.states import JobState
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

#: Rows of workers not seen for this long are removed when a worker starts.
FORGET_AFTER = timedelta(days=1)


def heartbeat_seconds(runtime: Runtime) -> float:
    """A third of the job lease: a worker is called offline about when its jobs' leases expire."""
    return max(1.0, runtime.settings.job_lease_seconds / 3)


def attach(celery: Celery, runtime: Runtime, queues: list[str]) -> None:
    """Report this worker from the moment Celery says it is ready until it shuts down."""
    state: dict[str, str] = {}

    def ready(sender: Any, **_: Any) -> None:
        name = str(sender.hostname)
        state["name"] = name
        controller = getattr(sender, "controller", None)
        concurrency = int(getattr(controller, "concurrency", 0) or 0)
        _beat(runtime, name, queues, concurrency)
        sender.timer.call_repeatedly(
            heartbeat_seconds(runtime), _beat, (runtime, name, queues, concurrency)
        )

    def shutdown(**_: Any) -> None:
        if "name" in state:
            try:
                mark_stopped(runtime, state["name"])
            except Exception:
                logger.exception("could not mark worker %s stopped", state["name"])

    # weak=False: the closures live only in these connections.
    worker_ready.connect(ready, weak=False)
    worker_shutdown.connect(shutdown, weak=False)


def register(runtime: Runtime, name: str, queues: list[str], concurrency: int) -> None:
    now = utcnow()
    with runtime.transaction() as session:
        session.execute(delete(Worker).where(Worker.last_seen_at < now - FORGET_AFTER))
        session.execute(delete(Worker).where(Worker.name == name))
        session.add(
            Worker(
                name=name,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=queues,
                concurrency=concurrency,
                version=__version__,
                started_at=now,
                last_seen_at=now,
            )
        )


def _beat(runtime: Runtime, name: str, queues: list[str], concurrency: int) -> None:
    """Refresh this worker's row, or write it if it is missing: the first write may have
    failed (database busy or away at start), or the row was removed."""
    try:
        with runtime.transaction() as session:
            seen = rows_changed(
                session,
                update(Worker)
                .where(Worker.name == name, Worker.pid == os.getpid())
                .values(last_seen_at=utcnow()),
            )
        if not seen:
            register(runtime, name, queues, concurrency)
    except Exception as error:  # the database is away: the next beat tries again
        logger.warning("worker heartbeat of %s failed: %s", name, error)


def mark_stopped(runtime: Runtime, name: str) -> None:
    with runtime.transaction() as session:
        session.execute(
            update(Worker)
            .where(Worker.name == name, Worker.pid == os.getpid())
            .values(stopped_at=utcnow())
        )


@dataclass
class WorkerView:
    """A worker row with what the API adds: its state and the jobs running on it."""

    name: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    state: str
    running_jobs: list[str]


def list_workers(runtime: Runtime) -> list[WorkerView]:
    """All known workers, newest first: `online`, `offline` (not seen for three heartbeats:
    killed, or cut off from the database) or `stopped` (shut down cleanly)."""
    cutoff = utcnow() - 3 * timedelta(seconds=heartbeat_seconds(runtime))
    with runtime.reads() as session:
        workers = session.scalars(select(Worker).order_by(Worker.started_at.desc())).all()
        running = session.execute(
            select(Job.id, Job.worker).where(Job.state == JobState.running)
        ).all()
    by_node: dict[str, list[str]] = {}
    for job_id, job_worker in running:
        # The runner records `<node name>/<pool process pid>`.
        by_node.setdefault((job_worker or "").rsplit("/", 1)[0], []).append(job_id)
    views = []
    for w in workers:
        if w.stopped_at is not None:
            state = "stopped"
        else:
            state = "online" if w.last_seen_at >= cutoff else "offline"
        views.append(
            WorkerView(
                name=w.name,
                hostname=w.hostname,
                pid=w.pid,
                queues=list(w.queues),
                concurrency=w.concurrency,
                version=w.version,
                started_at=w.started_at,
                last_seen_at=w.last_seen_at,
                stopped_at=w.stopped_at,
                state=state,
                running_jobs=sorted(by_node.get(w.name, [])) if state != "stopped" else [],
            )
        )
    return views
