"""What a job's run function gets: its id, a log, progress reporting and cancellation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from submitter.runtime import Runtime

logger = logging.getLogger("submitter.job")


class JobCancelled(Exception):
    """Raised inside a run function when its job was cancelled; the runner expects it."""


@dataclass
class JobContext:
    """Handed to a kind's run function.

    The runner fills the callbacks; they write to the job row and its log, so a run function
    needs no database code. `cancelled` is set by the heartbeat when the job is cancelled.
    Files written under `workdir` become the job's artifacts when it ends.
    """

    job_id: str
    attempt: int
    log_line: Callable[[str, str], None]
    report_progress: Callable[[float | None, str | None, str | None], None]
    workdir: Path
    runtime: Runtime
    cancelled: threading.Event = field(default_factory=threading.Event)

    def log(self, message: str, level: str = "INFO") -> None:
        """Add a line to the job's log (shown by `submitter jobs logs`)."""
        logger.log(logging.getLevelName(level), message)
        self.log_line(level, message)

    def progress(
        self, fraction: float | None = None, message: str | None = None, phase: str | None = None
    ) -> None:
        """Report progress (0..1), a short message and/or a phase on the job."""
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
        self.report_progress(fraction, message, phase)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise JobCancelled as soon as the job is cancelled."""
        if self.cancelled.wait(seconds):
            raise JobCancelled()
