"""A sandbox's control groups (cgroup v1), where this host lets the worker make them.

The kernel then holds the limits for the sandbox as a whole, children and daemons included:
`memory` (all its processes together; the OOM killer acts inside the group only), `cpuset`
(the CPUs: a process cannot widen its own affinity past them) and `pids` (fork fails past
the limit). Each group is made under the worker's own group of that controller, named
`submitter-<job id>-p<its maker's pid>-<random>`, joined by the sandbox's launcher before
it starts bwrap, and removed when the sandbox has ended; `sweep` removes what a killed
pool process left.

Where a controller is missing or not writable (a non-root container, a cgroup v2 host), the
sandbox has no group and the watchdog (`submitter.sandbox.watchdog`) holds the limits.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from submitter.jobs.context import process_alive

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpuset", "pids")
PREFIX = "submitter-"


def _own_paths() -> dict[str, Path]:
    """The worker's own group of each v1 controller (`/proc/self/cgroup`), as folders."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            if name in CONTROLLERS:
                found[name] = ROOT / name / path.lstrip("/")
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as out:
        out.write(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _field(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


@dataclass
class Usage:
    peak_memory_bytes: int | None
    oom_kills: int
    pids_refused: int


class Cgroups:
    """The groups of one sandbox; `make` returns None where none can be made."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    @classmethod
    def make(
        cls, job_id: str, *, memory_bytes: int | None, cpus: list[int] | None, processes: int
    ) -> Cgroups | None:
        """Groups with these limits, or None if this host gives us none (then the caller's
        watchdog holds the limits). All three controllers or none: half a set would leave
        a limit to a watchdog that thinks the kernel holds it."""
        own = _own_paths()
        if set(own) != set(CONTROLLERS):
            return None
        name = f"{PREFIX}{job_id}-p{os.getpid()}-{secrets.token_hex(4)}"
        made: dict[str, Path] = {}
        try:
            for controller in CONTROLLERS:
                folder = own[controller] / name
                folder.mkdir()
                made[controller] = folder
            memory = made["memory"]
            if memory_bytes is not None:
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            cpuset = made["cpuset"]
            parent = own["cpuset"]
            _write(cpuset / "cpuset.mems", _read(parent / "cpuset.mems").strip())
            allowed = ",".join(map(str, cpus)) if cpus else _read(parent / "cpuset.cpus").strip()
            _write(cpuset / "cpuset.cpus", allowed)
            _write(made["pids"] / "pids.max", str(processes))
        except OSError:
            Cgroups(made).remove()
            return None
        return cls(made)

    def procs_files(self) -> list[str]:
        """The files the launcher writes its pid to (it joins every group, then execs)."""
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def usage(self) -> Usage:
        memory = self.folders["memory"]
        peak = _read(memory / "memory.max_usage_in_bytes").strip()
        return Usage(
            peak_memory_bytes=int(peak) if peak.isdigit() else None,
            oom_kills=_field(_read(memory / "memory.oom_control"), "oom_kill"),
            pids_refused=_field(_read(self.folders["pids"] / "pids.events"), "max"),
        )

    def remove(self, wait: float = 2.0) -> bool:
        """Remove the groups; a group is busy until the kernel has reaped its last process,
        so retry for up to `wait` seconds. False if some are left (the sweep gets them)."""
        deadline = time.monotonic() + wait
        left = dict(self.folders)
        while left:
            for controller, folder in list(left.items()):
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                del left[controller]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        return not left


_GROUP = re.compile(rf"^{PREFIX}.+-p(\d+)-[0-9a-f]+$")


def sweep() -> int:
    """Remove the groups that processes no longer running on this host made (a pool
    process killed mid-job removes none); how many were removed. The maker's pid is in the
    name, so a group another process is setting up right now is never taken; a group with
    processes in it cannot be removed, and is not."""
    removed = 0
    for folder in _own_paths().values():
        with contextlib.suppress(OSError):
            for child in folder.iterdir():
                found = _GROUP.match(child.name)
                if found is None or process_alive(int(found.group(1))):
                    continue
                with contextlib.suppress(OSError):
                    child.rmdir()
                    removed += 1
    return removed


def available() -> bool:
    """Whether this process can make sandbox groups (probed with a throwaway set)."""
    probe = Cgroups.make(f"probe{os.getpid()}", memory_bytes=None, cpus=None, processes=16)
    if probe is None:
        return False
    probe.remove()
    return True
