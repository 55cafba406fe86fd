"""Reading a metrics file as it grows: complete lines only, each checked, none too long."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

#: A longer line is not a metric: it is skipped without being held in memory whole.
MAX_LINE_BYTES = 4096
#: Read at most this much per call, so one huge burst does not stall the caller.
MAX_READ_BYTES = 4 << 20
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
STEP_MAX = 2**63 - 1


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    step: int | None


def parse_line(text: str) -> Metric:
    """One JSON line → a Metric; ValueError saying what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name, value, step = data.get("name"), data.get("value"), data.get("step")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("name must be a string of 1 to 128 characters, no control characters")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"value of {name!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"value of {name!r} is not finite")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= STEP_MAX
    ):
        raise ValueError(f"step of {name!r} must be a whole number >= 0 or null")
    return Metric(name, float(value), step)


class MetricsReader:
    """Reads the lines appended to a file since the last call (the file may not exist yet).

    A line without its newline is kept for the next call, unless `final` (the job ended):
    a writer caught mid-line is not read as a bad line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._skipping = False  # inside an over-long line, until its newline

    def read(self, *, final: bool = False) -> tuple[list[Metric], list[str]]:
        """New metrics, and one problem text per bad line."""
        try:
            with open(self.path, "rb") as source:
                source.seek(self._offset)
                chunk = source.read(MAX_READ_BYTES)
        except FileNotFoundError:
            return [], []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        metrics: list[Metric] = []
        problems: list[str] = []
        for raw in lines:
            if self._skipping:
                self._skipping = False
                continue
            self._take(raw, metrics, problems)
        if len(self._partial) > MAX_LINE_BYTES:
            if not self._skipping:
                problems.append(f"a line longer than {MAX_LINE_BYTES} bytes")
            self._partial = b""
            self._skipping = True
        return metrics, problems

    @staticmethod
    def _take(raw: bytes, metrics: list[Metric], problems: list[str]) -> None:
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            return
        if len(raw) > MAX_LINE_BYTES:
            problems.append(f"a line longer than {MAX_LINE_BYTES} bytes")
            return
        try:
            metrics.append(parse_line(text))
        except ValueError as error:
            problems.append(f"{error}: {text[:200]}")

    def read_all(self) -> tuple[list[Metric], list[str]]:
        """Everything left, to the end (a file collected after the job)."""
        metrics: list[Metric] = []
        problems: list[str] = []
        while True:
            before = self._offset
            more, bad = self.read(final=True)
            metrics += more
            problems += bad
            if self._offset == before:
                return metrics, problems
