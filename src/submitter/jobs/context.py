"""What a job's run function gets: its id, a log, progress reporting and cancellation."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
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


class HandedOff(Exception):
    """Raised by a run function whose work continues elsewhere (a SLURM job on a cluster).

    The runner releases the job, still `running` in `phase`, with no worker and no lease:
    something else (the HPC monitor) follows it and hands it back to a worker (phase
    `collecting`), which runs the kind's function again with `external_id` set.
    """

    def __init__(self, phase: str, message: str | None = None) -> None:
        super().__init__(phase)
        self.phase = phase
        #: Shown as the job's message while it is handed off (why it waits).
        self.message = message


class JobFailed(Exception):
    """A failure with a result worth keeping (e.g. the accounting of a failed SLURM job)."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


def folder_prefix(job_id: str) -> str:
    """Every folder a run makes on this host starts with this: the job and the process
    running it, so that a killed process's folders can be found (`sweep_folders`)."""
    return f"submitter-job-{job_id}-p{os.getpid()}-"


_FOLDER = re.compile(r"^submitter-job-[^/]+-p(\d+)-")


def remove_tree(path: Path) -> None:
    """Remove a folder a job wrote, even where it took its own permissions away (a `chmod
    000` folder stops `rmtree` for a non-root worker); links are removed, not followed."""

    def unblock(_: object, failed: str, __: object) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed)
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    shutil.rmtree(path, onerror=unblock)


def remove_folders(job_id: str) -> None:
    """This process's folders of the job (its scratch, a command's job folder)."""
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{folder_prefix(job_id)}*"):
        with contextlib.suppress(OSError):
            remove_tree(path)


def sweep_folders() -> int:
    """Remove the job folders of processes that no longer run on this host (a pool
    process killed mid-job runs no `finally`); how many were removed."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            found = _FOLDER.match(entry.name)
            if found is None or process_alive(int(found.group(1))):
                continue
            with contextlib.suppress(OSError):
                remove_tree(Path(entry.path))
                removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workdir:
    """A job's scratch folder, made on first use and removed by `remove`.

    Most short jobs (echo, a user's command that writes nothing) never touch it; making and
    removing a folder per job was about 9% of a worker's CPU on echo jobs in
    bench/dispatch.py. Thread-safe: the beat thread may remove it while the run function
    makes it, and a folder made after `remove` is removed again by the next `remove`.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._path: Path | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The folder, made now (mode 0700, a fresh name) if it does not exist yet."""
        with self._lock:
            if self._path is None:
                self._path = Path(tempfile.mkdtemp(prefix=self._prefix))
            return self._path

    @property
    def made(self) -> Path | None:
        """The folder if a run made it, else None (nothing to upload or remove)."""
        return self._path

    def remove(self) -> None:
        with self._lock:
            path, self._path = self._path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


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
    scratch: Workdir
    runtime: Runtime
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: The job's id on an external system (a SLURM job id), set by an earlier run.
    external_id: str | None = None
    record_external_id: Callable[[str], bool] = lambda _: False
    #: The phase a handed-off job came back to a worker in (`collecting`, `released`), or
    #: None for a fresh run.
    resumed_phase: str | None = None
    #: Process groups the run started (a command job's): killed with the pool process if
    #: the run does not stop within the cancel grace, so none outlives a killed run.
    process_groups: set[int] = field(default_factory=set)

    @property
    def workdir(self) -> Path:
        """The job's scratch folder, made on first use."""
        return self.scratch.path

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

    def set_external_id(self, external_id: str) -> bool:
        """Record the external id *now* (committed); False if the job is no longer ours.

        Committed before anything else happens so that a worker dying right after
        `sbatch` leaves a job that is resumed, not submitted twice.
        """
        self.external_id = external_id
        return self.record_external_id(external_id)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise JobCancelled as soon as the job is cancelled."""
        if self.cancelled.wait(seconds):
            raise JobCancelled()
