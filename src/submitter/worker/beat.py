"""Celery beat's scheduler for Submitter.

Two differences from Celery's default (PersistentScheduler):

- The schedule is kept in memory: no `celerybeat-schedule` shelve (a pickle file) on disk.
  The built-in entries are intervals; after a restart they simply start counting again.
- Maintenance tasks (the reconciler, the HPC monitor and clean-up, firing user schedules)
  run *here*, in the beat process, instead of being sent to a worker. A reconciler queued
  behind hours of training jobs, or with every worker dead, would recover nothing; beat
  runs where the clock is and needs only the database and the broker (and, for the HPC
  tasks, the clusters).
- User schedules live in the database (`schedules` table), not in beat's schedule: one
  entry looks for due ones each tick, so schedules made through the API start without a
  beat restart, and two beat processes never fire the same run (see
  submitter.schedules.service).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import beat

from submitter.db.types import utcnow
from submitter.hpc.pool import POOL
from submitter.runtime import Runtime
from submitter.worker.beat_status import BeatStatus
from submitter.worker.dispatch import (
    HPC_CLEANUP_TASK,
    HPC_MONITOR_TASK,
    RECONCILE_TASK,
    SCHEDULES_TASK,
)

logger = logging.getLogger(__name__)


def _reconcile(runtime: Runtime) -> None:
    from submitter.worker.reconciler import reconcile

    reconcile(runtime)


def _hpc_monitor(runtime: Runtime) -> None:
    from submitter.hpc.monitor import poll_clusters

    poll_clusters(runtime)


def _hpc_cleanup(runtime: Runtime) -> None:
    from submitter.hpc.cleanup import clean_up

    clean_up(runtime)


def _schedules(runtime: Runtime) -> None:
    from submitter.schedules.service import fire_due

    fire_due(runtime)


#: Celery task name → (name in SUBMITTER_SCHEDULER_TIMES and /api/v1/tasks, function).
IN_BEAT: dict[str, tuple[str, Callable[[Runtime], None]]] = {
    RECONCILE_TASK: ("reconcile", _reconcile),
    HPC_MONITOR_TASK: ("hpc_monitor", _hpc_monitor),
    SCHEDULES_TASK: ("schedules", _schedules),
    HPC_CLEANUP_TASK: ("hpc_cleanup", _hpc_cleanup),
}


class Scheduler(beat.Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runtime: Runtime | None = None
        self._status: BeatStatus | None = None

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.app.conf["submitter_settings"], celery=self.app)
        return self._runtime

    def status(self) -> BeatStatus:
        if self._status is None:
            self._status = BeatStatus(self.runtime())
        return self._status

    def apply_entry(self, entry: beat.ScheduleEntry, producer: Any = None) -> None:
        in_beat = IN_BEAT.get(entry.task)
        if in_beat is None:
            super().apply_entry(entry, producer)
            return
        name, run_here = in_beat
        started, clock = utcnow(), time.monotonic()
        commands_before = collections.Counter(POOL.commands)  # a few entries: microseconds
        error = None
        try:
            run_here(self.runtime())
        except Exception as exc:  # one failed round must not stop beat; the next one retries
            logger.exception("maintenance task %s failed", entry.task)
            error = f"{type(exc).__name__}: {exc}"
        interval = self.runtime().settings.maintenance_intervals[name]
        # What this run made the SSH pool do, for submitter_hpc_commands_total (see
        # submitter.worker.beat_status): the pool's counters live only in this process.
        commands = collections.Counter(POOL.commands)
        commands.subtract(commands_before)
        ran = {key: n for key, n in commands.items() if n > 0}
        self.status().record(name, interval, started, time.monotonic() - clock, error, ran)
