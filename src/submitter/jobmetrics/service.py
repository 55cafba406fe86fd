"""Job metrics in the database: recorded by workers (bounded), read by the API."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select

from submitter.db.models import Job, JobMetric
from submitter.db.types import utcnow
from submitter.jobmetrics.parse import Metric, MetricsReader
from submitter.jobs.service import JobNotFound
from submitter.runtime import Runtime

if TYPE_CHECKING:
    from submitter.hpc.transport import Transport
    from submitter.jobs.context import JobContext

logger = logging.getLogger(__name__)

#: Bad lines written to the job log one by one; past this many, only their count.
LOGGED_PROBLEMS = 5


class MetricsSink:
    """Where one run's metrics go: the `job_metrics` rows of its job, at most `limit`.

    A run starts from nothing (`clear`): a retried or resumed job reports its metrics
    again, and they replace the earlier attempt's. A value without a step gets the next
    step of its name, so every value has a place on a chart's x axis.
    """

    def __init__(self, runtime: Runtime, job_id: str, log: Callable[[str, str], None]) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.log = log
        self.limit = runtime.settings.max_metrics_per_job
        self.count = 0
        self.dropped = 0
        self.problems = 0
        self._next_step: dict[str, int] = {}

    def clear(self) -> None:
        with self.runtime.engine.begin() as connection:
            connection.execute(delete(JobMetric).where(JobMetric.job_id == self.job_id))

    def add(self, metrics: Sequence[Metric], problems: Sequence[str]) -> None:
        for problem in problems:
            self.problems += 1
            if self.problems <= LOGGED_PROBLEMS:
                self.log(f"metrics: line skipped: {problem}", "WARNING")
        room = max(0, self.limit - self.count)
        kept, over = metrics[:room], len(metrics) - room
        if over > 0:
            if not self.dropped:
                self.log(
                    f"metrics: this job reached the limit of {self.limit} values "
                    "(SUBMITTER_MAX_METRICS_PER_JOB); later values are not kept",
                    "WARNING",
                )
            self.dropped += over
        if not kept:
            return
        now = utcnow()
        rows = []
        for metric in kept:
            step = metric.step if metric.step is not None else self._next_step.get(metric.name, 0)
            self._next_step[metric.name] = step + 1
            rows.append(
                {
                    "job_id": self.job_id,
                    "name": metric.name,
                    "step": step,
                    "value": metric.value,
                    "at": now,
                }
            )
        with self.runtime.engine.begin() as connection:
            connection.execute(insert(JobMetric), rows)
        self.count += len(rows)

    def summary(self) -> None:
        """The closing log line: how many values were kept, skipped and dropped."""
        if not (self.count or self.problems or self.dropped):
            return
        parts = [f"metrics: {self.count} value(s) recorded"]
        if self.problems:
            parts.append(f"{self.problems} bad line(s) skipped")
        if self.dropped:
            parts.append(f"{self.dropped} past the limit dropped")
        self.log(", ".join(parts), "WARNING" if self.problems or self.dropped else "INFO")


def record_file(runtime: Runtime, job_id: str, path: Path, log: Callable[[str, str], None]) -> int:
    """A whole metrics file at once (collected after a SLURM job); replaces earlier values."""
    sink = MetricsSink(runtime, job_id, log)
    sink.clear()
    metrics, problems = MetricsReader(path).read_all()
    sink.add(metrics, problems)
    sink.summary()
    return sink.count


def collect_metrics(
    ctx: JobContext, transport: Transport, remote: str, present: bool | None = None
) -> int:
    """The metrics file a job left in its folder (a SLURM job's, after it ended) → its
    metrics; the number recorded. `present`: whether the file is there, if a listing of
    the folder said so already (None: ask)."""
    if present is False or (present is None and not transport.exists(remote)):
        return 0
    with tempfile.TemporaryDirectory(prefix="submitter-metrics-") as scratch:
        local = Path(scratch) / "metrics.jsonl"
        transport.get(remote, local)
        return record_file(ctx.runtime, ctx.job_id, local, ctx.log)


class Follower(threading.Thread):
    """Tails a running job's metrics file into the DB every `interval` seconds."""

    def __init__(self, sink: MetricsSink, path: Path, interval: float = 1.0) -> None:
        super().__init__(name=f"metrics-{sink.job_id}", daemon=True)
        self.sink = sink
        self.reader = MetricsReader(path)
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._once(final=False)

    def _once(self, *, final: bool) -> None:
        try:
            self.sink.add(*self.reader.read(final=final))
        except Exception as error:  # the DB blipped: those values are lost, the job is not
            logger.warning("metrics of job %s not recorded: %s", self.sink.job_id, error)
            self.sink.log(f"metrics: some values were not recorded: {error}", "WARNING")

    def finish(self) -> None:
        """Stop, read what is left (the job has ended), log the summary."""
        self._stop_event.set()
        if self.is_alive():
            self.join()
        try:
            self.sink.add(*self.reader.read_all())
        except Exception as error:
            self.sink.log(f"metrics: some values were not recorded: {error}", "WARNING")
        self.sink.summary()


def list_metrics(
    runtime: Runtime, job_id: str, *, name: str | None, limit: int, offset: int
) -> tuple[list[JobMetric], int]:
    """The job's values ordered by name, step, then arrival; and how many there are."""
    with runtime.reads() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(job_id)
        where = [JobMetric.job_id == job_id]
        if name is not None:
            where.append(JobMetric.name == name)
        total = session.scalar(select(func.count()).select_from(JobMetric).where(*where)) or 0
        rows = session.scalars(
            select(JobMetric)
            .where(*where)
            .order_by(JobMetric.name, JobMetric.step, JobMetric.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows), total
