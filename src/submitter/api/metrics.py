"""Prometheus metrics: HTTP requests and latency, jobs by kind and state, queue depth,
workers by state, schedules, the age of beat's last run of each built-in task, job run time
and queue wait, prediction latency, HPC jobs and the commands beat ran on the clusters.

The API's `/metrics` describes the whole system, every worker and beat on every host,
without a pushgateway and without Prometheus' multiprocess mode in the workers: what
happens elsewhere is read from the database at scrape time. Counts, queue depths and HPC
jobs are gauges read as they are (`PlatformCollector`); the job histograms are observed
here from the jobs that started or finished since the previous scrape (`JobTimings`).
Prediction latency is measured where predictions happen, in the API process.

Every API replica reports every job (they read the same database), so aggregate the job
histograms over instances with `max`, not `sum` (quantiles and ratios come out the same
either way).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import aliased
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from submitter.db.models import HpcCommandCount, Job, JobDependency, Schedule
from submitter.db.types import utcnow
from submitter.jobs.states import ACTIVE, TERMINAL
from submitter.runtime import Runtime
from submitter.worker.beat_status import list_tasks
from submitter.worker.broker import queue_depths
from submitter.worker.presence import list_workers

logger = logging.getLogger(__name__)


class PlatformCollector(Collector):
    """Jobs, queues, workers, schedules and beat's tasks, read when Prometheus scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
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
        yield from self._hpc()

    def _workers_and_schedules(self) -> Iterator[Metric]:
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
        interval = GaugeMetricFamily(
            "submitter_beat_task_interval_seconds",
            "Seconds between two runs of each built-in beat task (its age alerts past 3 of these).",
            labels=["task"],
        )
        try:
            now = utcnow()
            for task in list_tasks(self.runtime):
                interval.add_metric([task.name], task.interval_seconds)
                if task.last_started_at is not None:
                    age.add_metric([task.name], (now - task.last_started_at).total_seconds())
        except Exception as error:
            logger.warning("metrics: beat tasks unavailable: %s", error)
        yield age
        yield interval

    def _hpc(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "submitter_hpc_jobs",
            "Active SLURM jobs by cluster and phase (the state when no phase is set).",
            labels=["cluster", "phase"],
        )
        commands = CounterMetricFamily(
            "submitter_hpc_commands",
            "Commands beat's HPC tasks (monitor, clean-up) ran on each cluster, all beats.",
            labels=["task", "cluster", "command"],
        )
        try:
            counts = {(cluster, phase): 0 for cluster in self._clusters() for phase in HPC_PHASES}
            cluster_of = Job.spec["cluster"].as_string()
            with self.runtime.reads() as session:
                rows = session.execute(
                    select(cluster_of, Job.state, Job.phase, func.count())
                    .where(Job.kind == "slurm", Job.state.in_([s.value for s in ACTIVE]))
                    .group_by(cluster_of, Job.state, Job.phase)
                ).all()
                totals = session.execute(
                    select(HpcCommandCount.task, HpcCommandCount.cluster, HpcCommandCount.command)
                    .add_columns(HpcCommandCount.count)
                    .order_by(HpcCommandCount.task, HpcCommandCount.cluster)
                ).all()
            for cluster, state, phase, count in rows:
                key = (str(cluster), phase or state)
                counts[key] = counts.get(key, 0) + count
            for (cluster, phase), count in sorted(counts.items()):
                jobs.add_metric([cluster, phase], count)
            for task, cluster, command, count in totals:
                commands.add_metric([task, cluster, command], count)
        except Exception as error:
            logger.warning("metrics: HPC jobs unavailable: %s", error)
        yield jobs
        yield commands

    def _clusters(self) -> list[str]:
        return [cluster.name for cluster in self.runtime.settings.clusters]


#: Series of `submitter_hpc_jobs` shown (as 0) for every configured cluster.
HPC_PHASES = ("queued", "waiting", "preparing", "submitted", "pending", "running", "collecting")

Key = TypeVar("Key")
Row = TypeVar("Row")


class NewRows(Generic[Key, Row]):
    """Which rows passed a timestamp column since the last look, each row exactly once.

    Each look asks for rows whose timestamp is after `start`: the time of the previous
    look minus `margin`. The margin catches rows committed late with an earlier timestamp
    (a transaction that set `finished_at` and committed a moment later, a worker whose
    clock is a little behind); the keys seen inside the margin are remembered so that the
    overlap is not counted twice, and forgotten once they fall out of it. So each look
    reads only the last `margin` + one scrape interval of an index, never the whole table,
    and memory holds only the rows of that window. Nothing at or before `since` (the start
    of the process) is ever returned: counters start at zero like any process's counters.
    A row whose commit lags its timestamp by more than `margin` is missed.

    A failed look (database away) changes nothing: the next one reads from the same
    start, so an outage delays observations but loses none.
    """

    def __init__(self, since: datetime, margin: timedelta) -> None:
        self.floor = since
        self.start = since
        self.margin = margin
        self._seen: dict[Key, datetime] = {}

    def take(self, rows: Iterable[tuple[Key, datetime, Row]], looked_at: datetime) -> list[Row]:
        """The rows not returned before, from a query for rows after `self.start` that ran
        at `looked_at` (taken before the query ran)."""
        fresh = []
        for key, at, row in rows:
            if at > self.start and key not in self._seen:
                self._seen[key] = at
                fresh.append(row)
        self.start = max(self.floor, looked_at - self.margin)
        self._seen = {key: at for key, at in self._seen.items() if at > self.start}
        return fresh

    @property
    def remembered(self) -> int:
        return len(self._seen)


_dependency = aliased(Job)
#: When the last dependency of a job ended (NULL for jobs without dependencies).
_DEPENDENCIES_ENDED = (
    select(func.max(_dependency.finished_at))
    .join(JobDependency, JobDependency.depends_on_id == _dependency.id)
    .where(JobDependency.job_id == Job.id)
    .correlate(Job)
    .scalar_subquery()
)
#: Seconds to a day: jobs run from under a second (echo) to hours (training, SLURM).
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400)


class JobTimings(Collector):
    """Job run time, queue wait and finished jobs, observed at scrape time from the database.

    Workers on other hosts run the jobs, so this process cannot time them; instead each
    scrape reads, through `NewRows`, the jobs that started or finished since the previous
    scrape (ranges on the `started_at` / `finished_at` indexes) and observes each of them
    once into ordinary prometheus_client histograms. They are real cumulative histograms
    (`rate()`, `histogram_quantile()` work), cost two small indexed reads per scrape, and a
    job is never observed twice, whichever process or host finished it.

    - `submitter_job_run_seconds{kind,state}`: from start to end of the job's last run,
      observed when it finishes (SLURM jobs include their time in the cluster's queue).
    - `submitter_job_queue_wait_seconds{kind}`: from when a job could first run (submitted,
      or its last dependency ended) to the start of its first run, observed when it starts,
      so a growing wait shows while the queue is still full. Re-runs after a lost worker
      are not observed (their wait is the reconciler's lease, not the queue).
    - `submitter_jobs_finished_total{kind,state}`: every job that ended, also those that
      never ran (cancelled while queued, failed dependency): the job failure rate.
    """

    def __init__(
        self,
        runtime: Runtime,
        since: datetime | None = None,
        margin: timedelta = timedelta(seconds=30),
    ) -> None:
        self.runtime = runtime
        since = since or utcnow()
        self.finished: NewRows[str, tuple[str, str, datetime | None, datetime]] = NewRows(
            since, margin
        )
        self.started: NewRows[str, tuple[str, datetime, datetime, datetime | None]] = NewRows(
            since, margin
        )
        self._lock = threading.Lock()
        self.run_seconds = Histogram(
            "submitter_job_run_seconds",
            "Job run time, from the start to the end of its last run, by kind and end state.",
            ["kind", "state"],
            buckets=RUN_BUCKETS,
            registry=None,
        )
        self.queue_wait = Histogram(
            "submitter_job_queue_wait_seconds",
            "Seconds from when a job could run (submitted, dependencies done) to its first start.",
            ["kind"],
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self.finished_total = Counter(
            "submitter_jobs_finished",
            "Jobs that ended, by kind and end state (including those that never ran).",
            ["kind", "state"],
            registry=None,
        )
        # Every series from the start, at 0: rate() misses the first increase of a series
        # that appears with it, e.g. the first failed job of a kind.
        from submitter.jobs.registry import all_kinds

        for kind in all_kinds():
            self.queue_wait.labels(kind)
            for state in TERMINAL:
                self.finished_total.labels(kind, state.value)

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # two scrapes at once must not observe the same job twice
            try:
                self.observe_new()
            except Exception as error:
                logger.warning("metrics: job timings unavailable: %s", error)
        yield from self.run_seconds.collect()
        yield from self.queue_wait.collect()
        yield from self.finished_total.collect()

    def observe_new(self) -> None:
        """Observe the jobs that finished or started since the previous call."""
        looked_at = utcnow()
        with self.runtime.reads() as session:
            finished = session.execute(
                select(Job.id, Job.kind, Job.state, Job.started_at, Job.finished_at).where(
                    Job.finished_at > self.finished.start
                )
            ).all()
            started = session.execute(
                select(Job.id, Job.kind, Job.started_at, Job.created_at, _DEPENDENCIES_ENDED).where(
                    Job.started_at > self.started.start, Job.attempts == 1
                )
            ).all()
        for kind, state, started_at, finished_at in self.finished.take(
            (
                (job_id, end, (kind, state, start, end))
                for job_id, kind, state, start, end in finished
                if end is not None  # always, by the query: for the type checker
            ),
            looked_at,
        ):
            if state not in TERMINAL:  # not expected: finished_at is set with the end state
                continue
            self.finished_total.labels(kind, state).inc()
            if started_at is not None:
                seconds = (finished_at - started_at).total_seconds()
                self.run_seconds.labels(kind, state).observe(max(0.0, seconds))
        for kind, started_at, created_at, dependencies_ended in self.started.take(
            (
                (job_id, start, (kind, start, created, deps))
                for job_id, kind, start, created, deps in started
                if start is not None
            ),
            looked_at,
        ):
            ready = max(created_at, dependencies_ended or created_at)
            self.queue_wait.labels(kind).observe(max(0.0, (started_at - ready).total_seconds()))


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
            "HTTP request latency: until the response starts (streams are not timed to their end).",
            ["method", "route"],
            registry=self.registry,
        )
        self.predictions = Histogram(
            "submitter_prediction_duration_seconds",
            "Real-time prediction latency in this API process, by model.",
            ["model"],
            buckets=PREDICTION_BUCKETS,
            registry=self.registry,
        )
        self._prediction_series: dict[str, Any] = {}
        self.registry.register(PlatformCollector(runtime))
        self.job_timings = JobTimings(runtime)
        self.registry.register(self.job_timings)

    def observe_prediction(self, model: str, seconds: float) -> None:
        """About a microsecond: the labelled series is looked up once per model, not per
        request (`labels()` takes a lock and builds a key). Call it for models that exist
        only, so a request cannot make a series for any name it likes."""
        series = self._prediction_series.get(model)
        if series is None:
            series = self._prediction_series[model] = self.predictions.labels(model)
        series.observe(seconds)


PREDICTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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
        # Latency is the time to the response's start, not to its last byte: an event stream
        # or a large download would otherwise count its whole life as the request's latency.
        answered: float | None = None

        async def capture(message: Message) -> None:
            nonlocal status_code, answered
            if message["type"] == "http.response.start":
                status_code = message["status"]
                answered = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status_code)).inc()
            end = answered if answered is not None else time.perf_counter()
            self.metrics.latency.labels(method, path).observe(end - start)
