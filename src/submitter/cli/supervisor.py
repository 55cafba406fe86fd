"""Runs a few child processes as one service, the way supervisord or systemd would.

- A child that exits, whatever its exit code, is started again after a back-off (1 s, then
  doubled on each quick failure up to 30 s); the others keep serving. Every child of `up`
  is meant to run until stopped, so an exit with code 0 is a failure too: Celery's worker
  exits 0 after "Unrecoverable error".
- A child that keeps dying at start (it exits within `start_seconds` of being started
  `start_retries` times in a row: a port in use, a bad setting) is not worth retrying: all
  stop, and the reason is printed with the last lines the child wrote; the exit code is
  non-zero.
- Ctrl+C or SIGTERM stops all: SIGTERM to each child, SIGKILL after `grace` seconds.

Each child runs in a process group of its own (so a terminal's Ctrl+C reaches only us,
and we stop children in order rather than all at once). When a child exits, what is left
of its group (e.g. a killed worker's pool processes) is killed before it is started again.
Children's output is passed through to ours line by line; the last lines of each are kept
for the give-up message.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

PR_SET_PDEATHSIG = 1
TAIL_LINES = 20


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `killed by SIGKILL`, as an operator wants to read it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    """One supervised command and what the supervisor knows of its current run."""

    name: str
    command: list[str]
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: Exits within `start_seconds` of start, in a row (reset by a run that lasted).
    quick_exits: int = 0
    restarts: int = 0
    #: When the next start is due (monotonic), while the child is down.
    start_at: float = 0.0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None


class Supervisor:
    """Starts `commands`, restarts those that exit, stops all on a signal or a give-up."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        env: dict[str, str],
        grace: float = 20.0,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        start_seconds: float = 10.0,
        start_retries: int = 5,
        output: IO[bytes] | None = None,
    ) -> None:
        self.children = {name: Child(name, command) for name, command in commands.items()}
        self.env = env
        self.grace = grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.start_seconds = start_seconds
        self.start_retries = start_retries
        self.output = output
        self._stop = threading.Event()
        self._output_lock = threading.Lock()

    def request_stop(self) -> None:
        """Make `run()` stop all children and return (what Ctrl+C and SIGTERM do)."""
        self._stop.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stop.is_set():
            console.print(f"{signal.Signals(signum).name}: stopping all")
        self.request_stop()

    def run(self) -> int:
        """Supervise until a signal (0) or until a child keeps dying at start (non-zero)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for child in self.children.values():
                    gave_up = None
                    if child.popen is not None and child.popen.poll() is not None:
                        gave_up = self._on_exit(child, now)
                    if gave_up is None and child.popen is None and child.start_at <= now:
                        gave_up = self._start(child, now)
                    if gave_up is not None:
                        code = gave_up
                        self._stop.set()
                        break
                self._stop.wait(0.1)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _start(self, child: Child, now: float) -> int | None:
        """Start the child; if it cannot even be started, count that as an exit at start."""
        # Started from the thread that runs run(): PR_SET_PDEATHSIG fires when the thread
        # that forked the child ends.
        try:
            popen = subprocess.Popen(
                child.command,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:  # no such program, say
            child.tail.append(f"cannot start {child.command[0]}: {error}")
            child.started_at = now
            return self._exited(child, 127, None, now)
        child.popen, child.started_at = popen, now
        child.tail.clear()  # "last output" is this run's
        if popen.stdout is not None:
            child.reader = threading.Thread(
                target=self._pass_output,
                args=(child, popen.stdout),
                name=f"output-{child.name}",
                daemon=True,
            )
            child.reader.start()
        return None

    def _pass_output(self, child: Child, stream: IO[bytes]) -> None:
        """Copy the child's output to ours as it comes, keeping its last lines."""
        out = self.output if self.output is not None else sys.stderr.buffer
        with stream:
            for line in iter(stream.readline, b""):
                child.tail.append(line.decode(errors="replace").rstrip("\n"))
                with self._output_lock, contextlib.suppress(OSError, ValueError):
                    out.write(line)
                    out.flush()

    def _on_exit(self, child: Child, now: float) -> int | None:
        """A running child has exited: clean up after it, then see `_exited`."""
        assert child.popen is not None
        pid, returncode = child.popen.pid, child.popen.returncode
        _kill_group(pid)
        if child.reader is not None:
            child.reader.join(2)  # its last lines, for a give-up message
        child.popen = child.reader = None
        return self._exited(child, returncode, pid, now)

    def _exited(self, child: Child, returncode: int, pid: int | None, now: float) -> int | None:
        """Plan the child's restart and say so; or return the exit code to give up with."""
        lasted = now - child.started_at
        child.quick_exits = child.quick_exits + 1 if lasted < self.start_seconds else 0
        how = describe_exit(returncode)
        who = child.name if pid is None else f"{child.name} (pid {pid})"
        if child.quick_exits >= self.start_retries:
            tail = "\n".join(list(child.tail)) or "(no output)"
            console.print(
                f"[red]{who} keeps dying at start: it exited within {self.start_seconds:g} s "
                f"of starting {child.quick_exits} times in a row (last: {how}); giving up, "
                f"stopping all.[/red] Last output of {child.name}:\n{escape(tail)}"
            )
            if returncode > 0:
                return returncode
            return 128 - returncode if returncode < 0 else 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** max(0, child.quick_exits - 1))
        child.restarts += 1
        child.start_at = now + delay
        console.print(
            f"[red]{who} {how} after {lasted:.1f} s[/red]; restart {child.restarts} "
            f"in {delay:g} s; the others keep running"
        )
        return None

    def stop(self) -> None:
        """SIGTERM each running child, SIGKILL those still there after `grace` seconds."""
        running = [child for child in self.children.values() if child.popen is not None]
        for child in running:
            assert child.popen is not None
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in running:
            assert child.popen is not None
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(
                    f"[yellow]{child.name} did not stop in {self.grace}s: killing[/yellow]"
                )
                child.popen.kill()
                child.popen.wait()
            _kill_group(child.popen.pid)
            if child.reader is not None:
                child.reader.join(2)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a child's process group (its leader has exited)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
