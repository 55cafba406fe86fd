"""Runs a few child processes as one: if one stops, or on Ctrl+C / SIGTERM, all stop."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from types import FrameType

from rich.console import Console

console = Console(stderr=True)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], grace: float = 20.0):
        self.commands = commands
        self.env = env
        self.grace = grace
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            console.print(f"{signal.Signals(signum).name}: stopping all")
        self._stopping = True

    def run(self) -> int:
        """Start all, wait until a signal or until a child exits; stop the rest; return a code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            for name, command in self.commands.items():
                # Own process group: a terminal's Ctrl+C reaches us only, and we stop
                # children in order rather than all at once.
                self.children[name] = subprocess.Popen(
                    command, env=self.env, start_new_session=True, preexec_fn=_die_with_parent
                )
            while not self._stopping:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        console.print(f"[red]{name} exited with {child.returncode}[/red]")
                        code = child.returncode or 1
                        self._stopping = True
                        break
                time.sleep(0.2)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{name} did not stop in {self.grace}s: killing[/yellow]")
                child.kill()
                child.wait()
