"""What the benchmarks share: errors, logging, free ports, clean environments, process groups."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys


class BenchError(Exception):
    """The benchmark could not run or finish; the message says why."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any SUBMITTER_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env.update(extra)
    return env


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]
