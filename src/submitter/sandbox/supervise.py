"""One sandboxed process, from start to its end: limits, output, stop, what it used.

- *Start*: a tiny launcher (`python -I -S -c`, the standard library only) sets the rlimits
  (address space, file size, no core files) and the CPU affinity in the new process, joins
  the sandbox's control groups, and then `exec`s bwrap (or, with no sandbox, the command):
  no `preexec_fn` (unsafe in a threaded worker), nothing left between the limits and the
  code. bwrap reports its child's host pid on an info pipe; that pid is the sandbox's PID
  namespace's first process, and its namespace is how the watchdog finds the rest.
- *Output*: stdout and stderr are read line by line while it runs, into the job log (at
  most `LOG_LINES` lines each) and whole into files.
- *Stop*: cancel and timeout send SIGTERM to every process of the sandbox, SIGKILL after
  the grace time. When the command ends, so does its PID namespace: the kernel kills what
  is left (`setsid` and double forks included). Without a sandbox, the same for its
  process group (which a `setsid` escapes: one of the reasons only admins may run so).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from submitter.sandbox import bwrap
from submitter.sandbox.cgroups import Cgroups
from submitter.sandbox.watchdog import Exceeded, Watchdog, namespace_pids

#: Lines of each stream copied into the job log; all of it is in the stream's file.
LOG_LINES = 10_000
MAX_LINE_BYTES = 16_384
POLL_SECONDS = 0.05
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

_LAUNCHER = r"""
import json, os, resource, signal, sys
config, argv = json.loads(sys.argv[1]), sys.argv[2:]
# Python ignores these, and an ignored signal stays ignored across exec: a command must
# die of a closed pipe or of its file-size limit as it would from a shell.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
for name, value in config["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
for path in config["cgroups"]:
    with open(path, "w") as procs:
        procs.write(str(os.getpid()))
if config["cpus"]:
    try:
        os.sched_setaffinity(0, set(config["cpus"]))
    except OSError as error:
        print(f"submitter: CPU affinity not set: {error}", file=sys.stderr)
try:
    os.execvp(argv[0], argv)
except OSError as error:
    print(f"submitter: cannot run {argv[0]!r}: {error.strerror}", file=sys.stderr)
    sys.exit(127)
"""


@dataclass
class Limits:
    memory_bytes: int | None = None
    cpus: list[int] | None = None
    processes: int | None = None
    #: The job folder's size, and the size of any one file written (RLIMIT_FSIZE).
    disk_bytes: int | None = None
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
    exceeded: Exceeded | None = None
    #: The signal that ended the command (bwrap reports it as 128 + its number).
    signal: str | None = None

    def memory_sign(self) -> str | None:
        """The stderr line that says memory ran out, if any."""
        for line in reversed(self.stderr_tail):
            if any(sign in line for sign in MEMORY_SIGNS):
                return line.strip()[:300]
        return None


@dataclass
class Supervision:
    """What a run reports to, and how it is told to stop: a job's, or a venv build's."""

    log_line: Callable[[str, str], None]
    cancelled: threading.Event
    grace_seconds: float
    #: Process groups to kill if the pool process itself must die (the job's heartbeat).
    process_groups: set[int]


class _Pump(threading.Thread):
    """Copies one output stream into a file and (the first LOG_LINES lines) the log."""

    def __init__(
        self, stream: IO[bytes], target: Path, log_line: Callable[[str, str], None], level: str
    ) -> None:
        super().__init__(name=f"output-{level}", daemon=True)
        self.stream, self.target, self.log_line, self.level = stream, target, log_line, level
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
                    self.log_line(self.level, text)
                elif lines == LOG_LINES + 1:
                    self.log_line(
                        "WARNING", f"more output than {LOG_LINES} lines: see {self.target.name}"
                    )


class _Sandboxed:
    """The running process and how to find and stop all of it."""

    def __init__(self, process: subprocess.Popen[bytes], child: int | None) -> None:
        self.process = process
        self.child = child  # the PID namespace's first process (bwrap inside), if sandboxed
        self.namespace: int | None = None
        # A pidfd, not the pid: signalled after it ended, a pid may name another process.
        self._pidfd: int | None = None
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                self._pidfd = os.pidfd_open(child)
                link = os.readlink(f"/proc/{child}/ns/pid")
                self.namespace = int(link.removeprefix("pid:[").rstrip("]"))

    def terminate(self) -> None:
        """SIGTERM to every process of it (not the namespace's init: it ignores signals
        from outside, and ends when the command does)."""
        if self.namespace is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            return
        for pid in namespace_pids(self.namespace):
            if pid != self.child:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the namespace's init takes every process of the namespace with it."""
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        _signal_group(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def run(
    supervision: Supervision,
    command: list[str],
    *,
    view: bwrap.View,
    sandboxed: bool,
    env: dict[str, str],
    limits: Limits,
    stdout: Path,
    stderr: Path,
    job_id: str,
    cgroups: bool = True,
) -> Outcome:
    """Run `command` in a sandbox showing `view` (or, not `sandboxed`, on the host in its
    folder) until it ends, is cancelled, times out or passes a limit."""
    folder = view.folder
    rlimits: dict[str, int] = {"RLIMIT_CORE": 0}
    if limits.memory_bytes:
        rlimits["RLIMIT_AS"] = limits.memory_bytes
    if limits.disk_bytes:
        rlimits["RLIMIT_FSIZE"] = limits.disk_bytes
    groups = None
    if sandboxed and cgroups:
        groups = Cgroups.make(
            job_id,
            memory_bytes=limits.memory_bytes,
            cpus=limits.cpus,
            processes=limits.processes or 4_194_304,
        )
    config = {
        "rlimits": rlimits,
        "cgroups": groups.procs_files() if groups else [],
        "cpus": limits.cpus or [],
    }
    # bwrap writes its child's pid to this pipe (sandboxed only).
    info_read, info_write = os.pipe() if sandboxed else (-1, -1)
    target = bwrap.argv(view, command, info_fd=info_write) if sandboxed else command
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(config), *target],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(info_write,) if sandboxed else (),
        )
    except BaseException:
        if sandboxed:
            os.close(info_read)
            os.close(info_write)
        if groups is not None:
            groups.remove()
        raise
    if sandboxed:
        os.close(info_write)
    supervision.process_groups.add(process.pid)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        _Pump(process.stdout, stdout, supervision.log_line, "INFO"),
        _Pump(process.stderr, stderr, supervision.log_line, "WARNING"),
    ]
    for pump in pumps:
        pump.start()
    running = _Sandboxed(process, _child_pid(info_read) if sandboxed else None)
    watchdog = Watchdog(
        folder=folder,
        disk_bytes=limits.disk_bytes,
        stop=running.kill,
        namespace=running.namespace if groups is None else None,
        memory_bytes=limits.memory_bytes,
        processes=limits.processes,
        cpus=limits.cpus,
        groups=groups,
    )
    watchdog.start()
    stopped_for: str | None = None
    killed = False
    status: int | None = None
    usage: resource.struct_rusage | None = None
    try:
        status, usage = _wait(process.pid, supervision.cancelled, limits.timeout_seconds, started)
        if status is None:  # cancelled or timed out: stop all of it
            stopped_for = "cancelled" if supervision.cancelled.is_set() else "timeout"
            grace = supervision.grace_seconds
            # A cancelled run must return before the heartbeat's own grace runs out (it
            # then kills the whole worker process): keep a margin. A timeout has no race.
            wait = grace if stopped_for == "timeout" else max(0.0, min(grace - 1, grace / 2))
            running.terminate()
            status, usage = _wait_exit(process.pid, wait)
            if status is None:
                killed = True
                running.kill()
                _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.finish()
        running.kill()  # whatever is left goes with it
        running.close()
        supervision.process_groups.discard(process.pid)
        if status is not None:  # reaped by wait4: Popen must not wait for it again
            process.returncode = os.waitstatus_to_exitcode(status)
    for pump in pumps:
        pump.join(timeout=10)  # without a sandbox, a process that left the group may hold it
    assert status is not None and usage is not None
    exit_code = os.waitstatus_to_exitcode(status)
    outcome = Outcome(
        exit_code=exit_code,
        elapsed_seconds=round(time.monotonic() - started, 3),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_bytes=usage.ru_maxrss * 1024,
        stopped_for=stopped_for,
        killed=killed,
        stderr_tail=list(pumps[1].tail),
        exceeded=watchdog.exceeded,
        signal=_signal_name(exit_code, sandboxed=sandboxed),
    )
    if groups is not None:
        _from_groups(outcome, groups, watchdog)
        groups.remove()
    return outcome


def _from_groups(outcome: Outcome, groups: Cgroups, watchdog: Watchdog) -> None:
    """What the kernel held, read once more at the end (the watchdog polls it while the
    sandbox runs): an OOM kill or a refused fork is the limit that ended it."""
    peak = groups.usage().peak_memory_bytes
    if peak:
        outcome.max_rss_bytes = peak
    if outcome.exceeded is None:
        outcome.exceeded = watchdog.check()


def _child_pid(info: int) -> int | None:
    """The sandbox's first process, as bwrap reports it on its info pipe (read to EOF:
    bwrap closes it once the namespaces are made, or exits having failed)."""
    chunks = []
    with os.fdopen(info, "rb") as stream:
        chunks.append(stream.read(65536))
    try:
        child = json.loads(b"".join(chunks) or b"{}").get("child-pid")
    except ValueError:
        return None
    return child if isinstance(child, int) else None


def _signal_name(exit_code: int, *, sandboxed: bool) -> str | None:
    number = -exit_code if exit_code < 0 else exit_code - 128 if sandboxed else 0
    if exit_code == 0 or not 0 < number < signal.NSIG:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(number).name
    return None


def _wait(
    pid: int, cancelled: threading.Event, timeout: float | None, started: float
) -> tuple[int | None, resource.struct_rusage | None]:
    """Until the process ends (its wait status and usage), or (None, None) on a cancel or
    the timeout."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if cancelled.is_set():
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
