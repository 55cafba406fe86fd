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
#: How long a finish waits for the follower's thread to end its last read.
JOIN_SECONDS = 5.0
#: How long a finish reads what is left of the file (the job has ended) before giving up.
FINISH_READ_SECONDS = 10.0


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
        """`problems`: texts from MetricsReader; one about the file as a whole (its `lines`
        is 0: not read, cut short) is always logged, bad lines up to LOGGED_PROBLEMS."""
        for problem in problems:
            lines = getattr(problem, "lines", 1)
            if not lines:
                self.log(f"metrics: {problem}", "WARNING")
                continue
            if lines == 1 and self.problems < LOGGED_PROBLEMS:
                self.log(f"metrics: line skipped: {problem}", "WARNING")
            self.problems += lines
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
    for metrics, problems in MetricsReader(path).chunks():  # stored a read at a time
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
    """Tails a running job's metrics file into the DB every `interval` seconds.

    `root`: the folder the worker trusts (the job's folder) that `path` is inside; nothing
    below it is followed if it is a link (see MetricsReader). Reading never blocks (a FIFO
    or a device there is reported once and not read), so neither does `finish`.
    """

    def __init__(
        self, sink: MetricsSink, path: Path, interval: float = 1.0, *, root: Path | None = None
    ) -> None:
        super().__init__(name=f"metrics-{sink.job_id}", daemon=True)
        self.sink = sink
        self.reader = MetricsReader(path, root=root)
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
        """Stop, read what is left (the job has ended; for FINISH_READ_SECONDS at most),
        log the summary. Waits JOIN_SECONDS at most for the thread's last read: if that is
        still running (a DB that hangs), the rest is not read, and the finish goes on."""
        self._stop_event.set()
        if self.is_alive():
            self.join(JOIN_SECONDS)
        if self.is_alive():
            logger.warning("metrics of job %s: the reader did not stop", self.sink.job_id)
            self.sink.log(
                f"metrics: the last values were not read (the reader did not stop within "
                f"{JOIN_SECONDS:g} s)",
                "WARNING",
            )
        else:
            try:
                for metrics, problems in self.reader.chunks(seconds=FINISH_READ_SECONDS):
                    self.sink.add(metrics, problems)
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
