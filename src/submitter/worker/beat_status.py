"""How beat's built-in tasks fare, kept in the `beat_tasks` table.

Beat runs the reconciler, the HPC monitor and clean-up and the schedule check in its own
process (see submitter.worker.beat). When beat stops, nothing else notices: jobs whose
message was lost stay queued, SLURM jobs are not followed, schedules do not fire. So each
task's last run, duration and error are written here, and `GET /api/v1/tasks`,
`submitter tasks` and the metric `submitter_beat_task_age_seconds` show them.

Writes are coalesced: at most one per task every `FLUSH_SECONDS`, and at once when a task
starts or stops failing. The schedule check runs every second; on SQLite each write takes
the database's write lock, which jobs need.

The HPC tasks also hand over the commands they ran on each cluster (the counters of the
process's SSH pool, which live in beat where no Prometheus scrapes). They are added to the
totals in `hpc_command_counts` in the same coalesced write, so `/metrics` on any API host
shows `submitter_hpc_commands_total` for the whole system, and the totals outlive a beat
restart (a counter that never resets is what Prometheus' `rate()` wants).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from submitter.db.models import BeatTask, HpcCommandCount
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
#: A task is `late` when it has not started for this many intervals (plus one flush).
LATE_AFTER_INTERVALS = 3


@dataclass
class _Unwritten:
    started: datetime
    duration: float
    error: str | None
    runs: int = 0
    failures: int = 0
    #: (cluster, command) → commands run since the last write
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)


class BeatStatus:
    """Beat's side: collects each run, writes coalesced."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.beat = f"{socket.gethostname()}/{os.getpid()}"
        self._unwritten: dict[str, _Unwritten] = {}
        self._written_at: dict[str, float] = {}
        self._written_error: dict[str, str | None] = {}

    def record(
        self,
        name: str,
        interval: float,
        started: datetime,
        duration: float,
        error: str | None,
        commands: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """One run of task `name`; `commands`: (cluster, program) → how many it ran."""
        entry = self._unwritten.get(name) or _Unwritten(started, duration, error)
        entry.started, entry.duration, entry.error = started, duration, error
        entry.runs += 1
        entry.failures += error is not None
        if commands:
            entry.commands.update(commands)
        self._unwritten[name] = entry
        first = name not in self._written_at
        due = time.monotonic() - self._written_at.get(name, -math.inf) >= FLUSH_SECONDS
        if first or due or error != self._written_error.get(name):
            self._write(name, interval, entry)

    def _write(self, name: str, interval: float, entry: _Unwritten) -> None:
        values = {
            "interval_seconds": interval,
            "last_started_at": entry.started,
            "last_duration_seconds": entry.duration,
            "last_error": entry.error,
            "beat": self.beat,
        }
        try:
            with self.runtime.transaction() as session:
                changed = rows_changed(
                    session,
                    update(BeatTask)
                    .where(BeatTask.name == name)
                    .values(
                        **values,
                        runs=BeatTask.runs + entry.runs,
                        failures=BeatTask.failures + entry.failures,
                    ),
                )
                if not changed:
                    session.execute(
                        insert(BeatTask).values(
                            name=name, runs=entry.runs, failures=entry.failures, **values
                        )
                    )
                for (cluster, command), count in sorted(entry.commands.items()):
                    _add_commands(session, name, cluster, command, count)
        except IntegrityError:  # another beat inserted it first: the next write updates
            return
        except Exception as error:  # the database is away: keep counting, write later
            logger.warning("beat status of %s not written: %s", name, error)
            return
        del self._unwritten[name]
        self._written_at[name] = time.monotonic()
        self._written_error[name] = entry.error


def _add_commands(session: Session, task: str, cluster: str, command: str, count: int) -> None:
    """Add to a total in one statement (no read-modify-write: two beats may add at once)."""
    key = (
        (HpcCommandCount.task == task)
        & (HpcCommandCount.cluster == cluster)
        & (HpcCommandCount.command == command)
    )
    added = rows_changed(
        session, update(HpcCommandCount).where(key).values(count=HpcCommandCount.count + count)
    )
    if not added:
        session.execute(
            insert(HpcCommandCount).values(task=task, cluster=cluster, command=command, count=count)
        )


@dataclass
class BeatTaskView:
    """A built-in task as `/api/v1/tasks` shows it."""

    name: str
    interval_seconds: float
    state: str  # ok | failing | late | never
    last_started_at: datetime | None
    last_duration_seconds: float | None
    last_error: str | None
    runs: int
    failures: int
    beat: str | None


def list_tasks(runtime: Runtime) -> list[BeatTaskView]:
    """Every built-in task of the settings, run or not: `never` on a fresh install means no
    beat has run against this database."""
    intervals = runtime.settings.maintenance_intervals
    with runtime.reads() as session:
        rows = {row.name: row for row in session.scalars(select(BeatTask))}
    now = utcnow()
    views = []
    for name, interval in intervals.items():
        row = rows.get(name)
        if row is None:
            views.append(BeatTaskView(name, interval, "never", None, None, None, 0, 0, None))
            continue
        late_after = timedelta(seconds=LATE_AFTER_INTERVALS * interval + FLUSH_SECONDS)
        if row.last_error:
            state = "failing"
        elif now - row.last_started_at > late_after:
            state = "late"
        else:
            state = "ok"
        views.append(
            BeatTaskView(
                name=name,
                interval_seconds=interval,
                state=state,
                last_started_at=row.last_started_at,
                last_duration_seconds=row.last_duration_seconds,
                last_error=row.last_error,
                runs=row.runs,
                failures=row.failures,
                beat=row.beat,
            )
        )
    return views
