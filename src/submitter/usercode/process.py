"""A user's command as a supervised process group on this host (the `command` kind).

- *Environment*: built from an allow-list (`ALLOWED_ENV`: PATH, locale, HOME, ...), never by
  removing names from the worker's own environment, so a secret the worker holds under any
  name (`SUBMITTER_*`, `DATABASE_URL`, `AWS_*`, a cluster key's passphrase) is not there.
  The worker's own venv is taken off PATH: a job without a venv runs the host's Python.
- *Limits*: a tiny launcher (`python -I -S -c`, the standard library only) sets RLIMIT_AS
  and the CPU affinity in the new process and then `exec`s the command: no `preexec_fn`
  (unsafe in a threaded worker), nothing left between the limit and the command.
- *Output*: stdout and stderr are read line by line while it runs, into the job log (at
  most `LOG_LINES` lines each) and whole into files that become artifacts.
- *Stopping*: the command leads its own process group (`start_new_session`). Cancel and
  timeout send SIGTERM to the group, SIGKILL after the grace time; when the command ends,
  what is left of its group is killed too, so no process outlives its job.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from submitter.jobs.context import JobContext

#: The only variables taken from the worker's environment.
ALLOWED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "TZ",
    "TERM",
)
#: Set to `resources.cpus`: the thread pools of OpenMP, MKL, OpenBLAS, numexpr, Accelerate.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
#: Lines of each stream copied into the job log; all of it is in the stream's artifact.
LOG_LINES = 10_000
MAX_LINE_BYTES = 16_384
#: What a process that ran out of address space usually says on stderr.
MEMORY_SIGNS = (
    "MemoryError",
    "Cannot allocate memory",
    "bad_alloc",
    "out of memory",
    "Out of memory",
    "memory exhausted",
    "failed to allocate",
)
POLL_SECONDS = 0.1

_LAUNCHER = r"""
import os, resource, sys
memory, cpus, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if memory != "-":
    resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
if cpus != "-":
    try:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    except OSError as error:
        print(f"submitter: CPU affinity not set: {error}", file=sys.stderr)
try:
    os.execvp(argv[0], argv)
except OSError as error:
    print(f"submitter: cannot run {argv[0]!r}: {error.strerror}", file=sys.stderr)
    sys.exit(127)
"""


def job_environment(
    worker_env: Mapping[str, str], user_env: Mapping[str, str], ours: Mapping[str, str]
) -> dict[str, str]:
    """The allow-listed part of `worker_env`, then the spec's `env`, then Submitter's own
    (the metrics file, the thread counts, the venv): those win over a spec's values."""
    env = {name: worker_env[name] for name in ALLOWED_ENV if name in worker_env}
    if "PATH" in env and sys.prefix != sys.base_prefix:
        own = os.path.join(sys.prefix, "bin")
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != own)
    env.setdefault("PATH", os.defpath)
    env.update(user_env)
    env.update(ours)
    return env


def pick_cpus(count: int, seed: str) -> list[int]:
    """`count` of the CPUs this worker may use, starting at a place `seed` (the job id)
    chooses: concurrent jobs on one host spread over its CPUs instead of all taking CPU 0."""
    available = sorted(os.sched_getaffinity(0))
    count = min(count, len(available))
    start = int(seed[:8], 16) % len(available) if seed[:8].isalnum() else 0
    return sorted(available[(start + i) % len(available)] for i in range(count))


@dataclass
class Limits:
    memory_bytes: int | None = None
    cpus: list[int] | None = None
    timeout_seconds: float | None = None


@dataclass
class Outcome:
    """How the process ended."""

    exit_code: int
    elapsed_seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    stopped_for: str | None = None  # "cancelled" or "timeout"
    killed: bool = False  # SIGKILL was needed
    stderr_tail: list[str] = field(default_factory=list)

    def memory_sign(self) -> str | None:
        """The stderr line that says memory ran out, if any."""
        for line in reversed(self.stderr_tail):
            if any(sign in line for sign in MEMORY_SIGNS):
                return line.strip()[:300]
        return None


class _Pump(threading.Thread):
    """Copies one output stream into a file and (the first LOG_LINES lines) the job log."""

    def __init__(self, stream: IO[bytes], target: Path, ctx: JobContext, level: str) -> None:
        super().__init__(name=f"output-{level}", daemon=True)
        self.stream, self.target, self.ctx, self.level = stream, target, ctx, level
        self.tail: collections.deque[str] = collections.deque(maxlen=50)

    def run(self) -> None:
        lines = 0
        with self.stream, open(self.target, "ab") as out:
            for raw in iter(lambda: self.stream.readline(MAX_LINE_BYTES), b""):
                out.write(raw)
                out.flush()
                text = raw.decode(errors="replace").rstrip("\r\n")
                self.tail.append(text)
                lines += 1
                if lines <= LOG_LINES:
                    # The log callback, not ctx.log: user output is the job's, not the
                    # worker's own log (nor the service log in the database).
                    self.ctx.log_line(self.level, text)
                elif lines == LOG_LINES + 1:
                    self.ctx.log_line(
                        "WARNING", f"more output than {LOG_LINES} lines: see {self.target.name}"
                    )


def run_supervised(
    ctx: JobContext,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    limits: Limits,
    stdout: Path,
    stderr: Path,
) -> Outcome:
    """Run `argv` in its own process group until it ends, is cancelled or times out."""
    memory = str(limits.memory_bytes) if limits.memory_bytes else "-"
    cpus = ",".join(map(str, limits.cpus)) if limits.cpus else "-"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, memory, cpus, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    group = process.pid
    ctx.process_groups.add(group)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        _Pump(process.stdout, stdout, ctx, "INFO"),
        _Pump(process.stderr, stderr, ctx, "WARNING"),
    ]
    for pump in pumps:
        pump.start()
    grace = ctx.runtime.settings.cancel_grace_seconds
    stopped_for: str | None = None
    killed = False
    status: int | None = None
    usage: resource.struct_rusage | None = None
    try:
        status, usage = _wait(group, ctx, limits.timeout_seconds, started)
        if status is None:  # cancelled or timed out: stop the group
            stopped_for = "cancelled" if ctx.cancelled.is_set() else "timeout"
            # A cancelled run must return before the heartbeat's own grace runs out (it
            # then kills the whole worker process): keep a margin. A timeout has no race.
            wait = grace if stopped_for == "timeout" else max(0.0, min(grace - 1, grace / 2))
            _signal_group(group, signal.SIGTERM)
            status, usage = _wait_exit(group, wait)
            if status is None:
                killed = True
                _signal_group(group, signal.SIGKILL)
                _, status, usage = os.wait4(group, 0)
    finally:
        # Whatever the command left running in its group goes with it.
        _signal_group(group, signal.SIGKILL)
        ctx.process_groups.discard(group)
        if status is not None:  # reaped by wait4: Popen must not wait for it again
            process.returncode = os.waitstatus_to_exitcode(status)
    for pump in pumps:
        pump.join(timeout=10)  # a grandchild that left the group may hold the pipe
    assert status is not None and usage is not None
    return Outcome(
        exit_code=os.waitstatus_to_exitcode(status),
        elapsed_seconds=round(time.monotonic() - started, 3),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_bytes=usage.ru_maxrss * 1024,
        stopped_for=stopped_for,
        killed=killed,
        stderr_tail=list(pumps[1].tail),
    )


def _wait(
    pid: int, ctx: JobContext, timeout: float | None, started: float
) -> tuple[int | None, resource.struct_rusage | None]:
    """Until the process ends (its wait status and usage), or (None, None) on a cancel or
    the timeout."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if ctx.cancelled.is_set():
            return None, None
        if timeout is not None and time.monotonic() - started >= timeout:
            return None, None
        time.sleep(POLL_SECONDS)


def _wait_exit(pid: int, seconds: float) -> tuple[int | None, resource.struct_rusage | None]:
    deadline = time.monotonic() + seconds
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.05)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
