"""Prometheus metrics: HTTP requests and latency, jobs by kind and state, queue depth,
workers by state, schedules, the age of beat's last run of each built-in task.

Counts and queue depths are read at scrape time from the database and the broker, so they
are right whatever process changed them (API, any worker, beat).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from submitter.db.models import Job, Schedule
from submitter.db.types import utcnow
from submitter.runtime import Runtime
from submitter.worker.beat_status import list_tasks
from submitter.worker.broker import queue_depths
from submitter.worker.presence import list_workers

logger = logging.getLogger(__name__)


class PlatformCollector(Collector):
    """Jobs, queues, workers, schedules and beat's tasks, read when Prometheus scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "submitter_jobs", "Jobs by kind and state.", labels=["kind", "state"]
        )
        try:
            with self.runtime.sessions() as session:
                rows = session.execute(
                    select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
                ).all()
            for kind, state, count in rows:
                jobs.add_metric([kind, state], count)
        except Exception as error:
            logger.warning("metrics: job counts unavailable: %s", error)
        yield jobs
        depth = GaugeMetricFamily(
            "submitter_queue_depth", "Messages waiting in a broker queue.", labels=["queue"]
        )
        try:
            for queue, count in queue_depths(self.runtime.celery).items():
                depth.add_metric([queue], count)
        except Exception as error:
            logger.warning("metrics: queue depth unavailable: %s", error)
        yield depth
        yield from self._workers_and_schedules()

    def _workers_and_schedules(self) -> Iterator[GaugeMetricFamily]:
        workers = GaugeMetricFamily(
            "submitter_workers", "Worker processes by state.", labels=["state"]
        )
        schedules = GaugeMetricFamily(
            "submitter_schedules", "Schedules, enabled or paused.", labels=["state"]
        )
        try:
            counts = collections.Counter(w.state for w in list_workers(self.runtime))
            for state in ("online", "offline", "stopped"):
                workers.add_metric([state], counts.get(state, 0))
            with self.runtime.reads() as session:
                rows = session.execute(
                    select(Schedule.enabled, func.count()).group_by(Schedule.enabled)
                ).all()
            by_state = {("enabled" if enabled else "paused"): n for enabled, n in rows}
            for state in ("enabled", "paused"):
                schedules.add_metric([state], by_state.get(state, 0))
        except Exception as error:
            logger.warning("metrics: workers/schedules unavailable: %s", error)
        yield workers
        yield schedules
        age = GaugeMetricFamily(
            "submitter_beat_task_age_seconds",
            "Seconds since beat last started each built-in task (alert when it grows).",
            labels=["task"],
        )
        try:
            now = utcnow()
            for task in list_tasks(self.runtime):
                if task.last_started_at is not None:
                    age.add_metric([task.name], (now - task.last_started_at).total_seconds())
        except Exception as error:
            logger.warning("metrics: beat tasks unavailable: %s", error)
        yield age


class Metrics:
    """The registry of one API app, and the ASGI middleware that times its requests."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "submitter_http_requests",
            "HTTP requests.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "submitter_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(PlatformCollector(runtime))


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware) that counts and times requests."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def capture(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status_code)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
