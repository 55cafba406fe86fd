"""Finishing the ended tasks of one SLURM array in bulk, on a worker.

The monitor hands each ended task back to a worker as it does a single job (phase
`collecting`). A single job's turn asks SLURM for its accounting (one `sacct`) and walks
its folder over SFTP (a listing per directory, a stat per control file): for 500 tasks
ending together that is 500 sacct calls and thousands of round trips, one task after the
other on a worker's few slots. For an array task the turn asks once for all the array's
tasks that are waiting to be collected: one `sacct --jobs=ARRAY` (AccountingLookup
collapses the tasks of one array to the array's id) and one `find` listing all their
folders. What it finds is kept in the worker process, so the next turns of the same
array on it find their record and listing ready; per task only its own files are fetched
(its SLURM output, its `files.collect`, the wrapper's times and metrics when listed).

A task whose record is not complete yet (slurmdbd lags the controller by a moment) or
whose folder was not listed is asked for again; where `find` fails, or the task is the
only one waiting (tasks ending one at a time, as on a full node), it takes the single
job's path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from submitter.db.models import Job
from submitter.hpc import slurm
from submitter.hpc.accounting import AccountingLookup
from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.pool import ClusterPool
from submitter.hpc.slurm import Accounting
from submitter.hpc.staging import job_folder
from submitter.hpc.transport import MAX_WALK_ENTRIES, RemoteFile
from submitter.jobs.states import JobState
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

#: What one bulk lookup found is reused this long (the answers are about ended tasks,
#: which do not change; the bound only keeps the process's memory small).
KEEP_SECONDS = 120.0
#: At most this many tasks per bulk lookup, and folders per `find` (its command line is
#: one argument of the remote shell: Linux takes 128 KiB at most).
MOST_TASKS = 1000
FOLDERS_PER_FIND = 200


@dataclass
class _Batch:
    at: float
    records: dict[str, Accounting] = field(default_factory=dict)
    listings: dict[str, list[RemoteFile]] = field(default_factory=dict)


def array_of(slurm_id: str) -> str | None:
    """`123` for an array task `123_4`; None for a single job."""
    array, sep, task = slurm_id.partition("_")
    return array if sep and array.isdigit() and task.isdigit() else None


def find_argv(folders: list[str]) -> list[str]:
    """Every regular file under `folders`: `folder NUL relative path NUL size NUL`."""
    return ["find", *folders, "-type", "f", "-printf", "%H\\0%P\\0%s\\0"]


def parse_find(output: str, folders: list[str]) -> dict[str, list[RemoteFile]]:
    """`find_argv`'s answer by folder; a folder that printed nothing is left out (it is
    missing, or find could not read it: its task walks it itself)."""
    listings: dict[str, list[RemoteFile]] = {}
    wanted = set(folders)
    parts = output.split("\0")
    for index in range(0, len(parts) - 2, 3):
        folder, path, size = parts[index : index + 3]
        if folder not in wanted or not path or not size.isdigit():
            continue
        files = listings.setdefault(folder, [])
        if len(files) < MAX_WALK_ENTRIES:
            files.append(RemoteFile(path, int(size)))
    return listings


class EndedTasks:
    """The process's bulk answers, by (cluster, array id)."""

    def __init__(self, pool: ClusterPool, accounting: AccountingLookup) -> None:
        self.pool = pool
        self.accounting = accounting
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str], _Batch] = {}
        #: bulk lookups made (bench/hpc_array.py and the tests read it)
        self.lookups = 0

    def ended(
        self, runtime: Runtime, cluster: ClusterConfig, base: str, job_id: str, slurm_id: str
    ) -> tuple[Accounting, list[RemoteFile]] | None:
        """Task `slurm_id`'s complete accounting record and its folder's files, from the
        array's bulk lookup (made now if this process has none that covers it)."""
        array = array_of(slurm_id)
        if array is None:
            return None
        folder = job_folder(base, job_id)
        key = (cluster.name, array)
        with self._lock:
            self._forget_old()
            batch = self._batches.get(key)
            if batch is None or not _covers(batch, slurm_id, folder):
                batch = self._lookup(runtime, cluster, base, array, job_id, slurm_id)
                self._batches[key] = batch
        if not _covers(batch, slurm_id, folder):
            return None
        return batch.records[slurm_id], batch.listings[folder]

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, b in self._batches.items() if now - b.at > KEEP_SECONDS]:
            del self._batches[key]

    def _lookup(
        self,
        runtime: Runtime,
        cluster: ClusterConfig,
        base: str,
        array: str,
        job_id: str,
        slurm_id: str,
    ) -> _Batch:
        """One sacct for the array, one find for the folders of its tasks waiting to be
        collected (this one among them)."""
        tasks = {slurm_id: job_id, **_waiting(runtime, job_id, array)}
        batch = _Batch(at=time.monotonic())
        if len(tasks) < 2:  # alone: a find costs more than the walk; the single path
            return batch
        self.lookups += 1
        batch.records = {
            task: record
            for task, record in self.accounting.lookup(cluster, list(tasks)).items()
            if _complete(record)
        }
        folders = [job_folder(base, tasks[task]) for task in tasks if task in batch.records]
        for start in range(0, len(folders), FOLDERS_PER_FIND):
            chunk = folders[start : start + FOLDERS_PER_FIND]
            done = self.pool.run(cluster, find_argv(chunk))
            if done.returncode not in (0, 1):  # 1: a folder could not be read
                logger.warning("cluster %s: find failed: %s", cluster.name, done.stderr[-500:])
                continue
            batch.listings.update(parse_find(done.stdout, chunk))
        logger.info(
            "array %s on %s: %d ended task(s) looked up at once, %d complete, %d listed",
            array,
            cluster.name,
            len(tasks),
            len(batch.records),
            len(batch.listings),
        )
        return batch


def _covers(batch: _Batch, slurm_id: str, folder: str) -> bool:
    return slurm_id in batch.records and folder in batch.listings


def _complete(record: Accounting) -> bool:
    return slurm.phase_of(record.state) == "finished" and record.end_time is not None


def _waiting(runtime: Runtime, job_id: str, array: str) -> dict[str, str]:
    """{task id: job id} of the array's other tasks the monitor handed back (`collecting`)."""
    with runtime.reads() as session:
        parent_id = session.scalar(select(Job.parent_id).where(Job.id == job_id))
        if parent_id is None:
            return {}
        rows = session.execute(
            select(Job.external_id, Job.id)
            .where(
                Job.parent_id == parent_id,
                Job.state == JobState.running,
                Job.phase == "collecting",
                Job.external_id.like(f"{array}\\_%", escape="\\"),
            )
            .limit(MOST_TASKS)
        ).all()
    return {task: child for task, child in rows if task and array_of(task) == array}
