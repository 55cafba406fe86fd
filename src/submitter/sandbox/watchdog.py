"""Watches a running sandbox from outside and ends it when it passes a limit.

Always: the job folder's size (`disk`: the bytes its files occupy, walked without following
links). Without control groups (`submitter.sandbox.cgroups`): also the sandbox's memory
(the resident memory of all its processes together), its process count, and its CPUs (the
affinity of every process is set back to the job's, so a job that widened its own gets
narrowed again within an interval). The sandbox's processes are those in its PID namespace,
found through `/proc/<pid>/ns/pid`: a daemon that left the process group is still there.

An rlimit cannot do this: RLIMIT_AS and RLIMIT_NPROC count per process or per user, so four
children of 150 MB pass a 200 MB limit, and the count would include the worker's own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from submitter.sandbox.cgroups import Cgroups

#: Folder entries looked at per pass at most: a job making millions of files is stopped.
MAX_ENTRIES = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Exceeded:
    """Which limit a sandbox passed, and the figure it reached."""

    limit: str  # "memory", "processes", "disk"
    used: int
    how: str


def namespace_pids(inode: int) -> list[int]:
    """The host pids of the processes in the PID namespace `inode`."""
    wanted = f"pid:[{inode}]"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/ns/pid") == wanted:
                    found.append(int(name))
    return found


def resident_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/statm") as s:
            total += int(s.read().split()[1]) * PAGE
    return total


def folder_bytes(folder: Path, limit: int = MAX_ENTRIES) -> int:
    """Bytes the files under `folder` occupy (allocated blocks), links not followed; past
    `limit` entries the walk stops and the answer is a lower bound."""
    total, seen = 0, 0
    stack = [str(folder)]
    while stack and seen < limit:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                seen += 1
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
    return total


class Watchdog(threading.Thread):
    """Checks a sandbox every `interval` seconds; on a passed limit, records it in
    `exceeded` and calls `stop` (which kills the sandbox)."""

    def __init__(
        self,
        *,
        folder: Path,
        disk_bytes: int | None,
        stop: Callable[[], None],
        namespace: int | None = None,
        memory_bytes: int | None = None,
        processes: int | None = None,
        cpus: list[int] | None = None,
        groups: Cgroups | None = None,
        interval: float = 0.5,
    ) -> None:
        super().__init__(name="sandbox-watchdog", daemon=True)
        self.folder, self.disk_bytes, self.stop = folder, disk_bytes, stop
        self.namespace, self.memory_bytes, self.processes = namespace, memory_bytes, processes
        self.cpus = set(cpus) if cpus else None
        self.groups = groups
        self.interval = interval
        self.exceeded: Exceeded | None = None
        self.peak_memory_bytes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            found = self.check()
            if found is not None:
                self.exceeded = found
                self.stop()
                return

    def check(self) -> Exceeded | None:
        if self.disk_bytes is not None:
            used = folder_bytes(self.folder)
            if used > self.disk_bytes:
                return Exceeded("disk", used, f"its folder held {_mb(used)}")
        if self.groups is not None:
            return self._check_groups(self.groups)
        if self.namespace is None:
            return None
        pids = namespace_pids(self.namespace)
        if self.processes is not None and len(pids) > self.processes:
            return Exceeded("processes", len(pids), f"{len(pids)} processes were running")
        if self.memory_bytes is not None:
            used = resident_bytes(pids)
            self.peak_memory_bytes = max(self.peak_memory_bytes, used)
            if used > self.memory_bytes:
                return Exceeded("memory", used, f"its processes held {_mb(used)} together")
        if self.cpus is not None:
            for pid in pids:
                with contextlib.suppress(OSError):
                    if os.sched_getaffinity(pid) != self.cpus:
                        os.sched_setaffinity(pid, self.cpus)
        return None

    def _check_groups(self, groups: Cgroups) -> Exceeded | None:
        """The kernel held a limit (an OOM kill, a refused fork): the job is over, not
        left running on with some of its processes gone."""
        used = groups.usage()
        if used.oom_kills and self.memory_bytes is not None:
            peak = used.peak_memory_bytes or self.memory_bytes
            how = f"the kernel killed {used.oom_kills} of its processes at {_mb(peak)}"
            return Exceeded("memory", peak, how)
        if used.pids_refused and self.processes is not None:
            how = f"{used.pids_refused} process or thread start(s) were refused"
            return Exceeded("processes", self.processes, how)
        return None

    def finish(self) -> None:
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"
