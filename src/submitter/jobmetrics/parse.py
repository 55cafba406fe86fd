"""Reading a metrics file as it grows: complete lines only, each checked, none too long.

The file is written by a job's own code, so the reader treats it as hostile: every
folder between a trusted root and the file is opened without following links, the file
itself non-blocking and without following links, and only a regular file with one name
is read (a FIFO, a device, a link or a hard link to someone else's file is reported once
and never read). Reads are bounded per call and per file, no more than one line's
`MAX_LINE_BYTES` of a partial line is held between calls, and a problem text quotes a
line only as a short, escaped excerpt.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: A longer line is not a metric: it is skipped without being held in memory whole.
MAX_LINE_BYTES = 4096
#: Read at most this much per call, so one huge burst does not stall the caller.
MAX_READ_BYTES = 4 << 20
#: Read at most this much of one file; past it, one problem and the rest is not read.
MAX_FILE_BYTES = 256 << 20
#: A file with more bad lines is not a metrics file: one problem, the rest is not read
#: (a bad line costs a failed JSON parse, so a file of them must not keep a core busy).
MAX_BAD_LINES = 10_000
#: How much of a bad line a problem text quotes (escaped).
EXCERPT_CHARS = 60
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_BLANK = re.compile(rb"[ \t\r\n]+")
STEP_MAX = 2**63 - 1

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    step: int | None


class Problem(str):
    """A problem text; `lines`: 1 for a bad line, 0 for the file as a whole (not read
    because it is a FIFO, cut at a bound). Compares equal to its plain text."""

    lines: int

    def __new__(cls, text: str, lines: int = 1) -> Problem:
        problem = super().__new__(cls, text)
        problem.lines = lines
        return problem


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


def excerpt(text: str) -> str:
    """A short, escaped quote of a line (no control characters reach a log)."""
    cut = text[:EXCERPT_CHARS]
    return repr(cut) + ("..." if len(text) > len(cut) else "")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


class _Refused(Exception):
    """The file (or a folder on its way) is not what a metrics file may be: not read."""


class MetricsReader:
    """Reads the lines appended to a file since the last call (the file may not exist yet).

    `path` must be inside `root` (default: the path's folder), a folder the caller trusts;
    every part of the path below `root` is opened without following links, so a job that
    swaps its metrics file or a folder on its way for a link, a FIFO or a device gets one
    problem ("... not read") and the reader stops for good. `max_bytes` bounds what is
    read of the file in all (default `MAX_FILE_BYTES`).

    A line without its newline is kept for the next call, unless `final` (the job ended)
    and the end of the file was reached: a writer caught mid-line is not read as a bad line.
    """

    def __init__(
        self, path: Path, *, root: Path | None = None, max_bytes: int | None = None
    ) -> None:
        self.path = path
        self.root = path.parent if root is None else root
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            raise ValueError(f"{path} is not inside {self.root}") from None
        if not parts or ".." in parts:
            raise ValueError(f"{path} is not a file inside {self.root}")
        self._parts = parts
        self.max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
        self.stopped = False  # reported once why; never read again
        self.bad_lines = 0
        self._offset = 0
        self._partial = b""
        self._skipping = False  # inside an over-long line, until its newline
        self._reported: set[str] = set()

    def read(self, *, final: bool = False) -> tuple[list[Metric], list[str]]:
        """New metrics, and one problem text per bad line (or about the file). Never
        blocks: a missing file is "not yet", anything but a regular file is not read."""
        metrics: list[Metric] = []
        problems: list[str] = []
        if self.stopped:
            return metrics, problems
        try:
            chunk, at_end = self._read_chunk()
        except FileNotFoundError:
            return metrics, problems
        except _Refused as refused:
            self.stopped = True
            return metrics, [Problem(str(refused), lines=0)]
        except OSError as error:  # e.g. no permission: said once, tried again next time
            text = f"metrics file could not be read ({error.strerror or error}): not read"
            if text not in self._reported:
                self._reported.add(text)
                problems.append(Problem(text, lines=0))
            return metrics, problems
        self._offset += len(chunk)
        self._lines(self._partial + chunk, final and at_end, metrics, problems)
        if self.stopped:  # too many bad lines
            return metrics, problems
        if self._offset >= self.max_bytes and not at_end:
            self.stopped = True
            problems.append(
                Problem(
                    f"metrics file is larger than {self.max_bytes} bytes: the rest is not read",
                    lines=0,
                )
            )
        return metrics, problems

    def _read_chunk(self) -> tuple[bytes, bool]:
        """What follows the offset (bounded), and whether that is all there is for now."""
        fd = self._open()
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Refused(
                    f"metrics file is not a regular file ({_kind(info.st_mode)}): not read"
                )
            if info.st_nlink > 1:
                raise _Refused(
                    f"metrics file has {info.st_nlink} names (a hard link to another "
                    "file?): not read"
                )
            want = min(MAX_READ_BYTES, self.max_bytes - self._offset)
            pieces: list[bytes] = []
            got = 0
            while got < want:
                piece = os.pread(fd, want - got, self._offset + got)
                if not piece:
                    return b"".join(pieces), True
                pieces.append(piece)
                got += len(piece)
            # As much as was asked for: at the end only if nothing follows.
            return b"".join(pieces), not os.pread(fd, 1, self._offset + got)
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The file's descriptor, reached from `root` one part at a time, no link followed."""
        folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(self._parts[:-1]):
                try:
                    inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
                except OSError as error:
                    if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    shown = "/".join(self._parts[: index + 1])
                    mode = os.lstat(part, dir_fd=folder).st_mode
                    raise _Refused(
                        f"metrics file's folder {shown!r} is not a folder ({_kind(mode)}): "
                        "not followed"
                    ) from None
                os.close(folder)
                folder = inner
            name = self._parts[-1]
            try:
                return os.open(name, _FILE_FLAGS, dir_fd=folder)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
                    raise
                mode = os.lstat(name, dir_fd=folder).st_mode
                raise _Refused(
                    f"metrics file is not a regular file ({_kind(mode)}): not read"
                ) from None
        finally:
            os.close(folder)

    def _lines(self, data: bytes, final: bool, metrics: list[Metric], problems: list[str]) -> None:
        """The complete lines of `data` (and its rest if `final`); the rest kept, bounded."""
        position, size = 0, len(data)
        if self._skipping:  # the rest of an over-long line, reported already
            end = data.find(b"\n")
            if end < 0:
                self._partial = b""
                return
            self._skipping = False
            position = end + 1
        while position < size and not self.stopped:
            blank = _BLANK.match(data, position)
            if blank:
                position = blank.end()
                continue
            end = data.find(b"\n", position)
            if end < 0:
                break
            self._take(data, position, end, metrics, problems)
            position = end + 1
        self._partial = b""
        if position < size and not self.stopped:
            if final:
                self._take(data, position, size, metrics, problems)
            elif size - position > MAX_LINE_BYTES:
                self._bad(f"a line longer than {MAX_LINE_BYTES} bytes", problems)
                self._skipping = True
            else:
                self._partial = data[position:]

    def _take(
        self, data: bytes, start: int, end: int, metrics: list[Metric], problems: list[str]
    ) -> None:
        """One line → a metric or a problem."""
        if end - start > MAX_LINE_BYTES:
            self._bad(f"a line longer than {MAX_LINE_BYTES} bytes", problems)
            return
        text = data[start:end].decode("utf-8", errors="replace").strip()
        if not text:
            return
        try:
            metrics.append(parse_line(text))
        except ValueError as error:
            self._bad(f"{error}: {excerpt(text)}", problems)

    def _bad(self, text: str, problems: list[str]) -> None:
        self.bad_lines += 1
        if self.bad_lines <= MAX_BAD_LINES:
            problems.append(Problem(text))
            return
        self.stopped = True
        problems.append(
            Problem(
                f"metrics file has more than {MAX_BAD_LINES} bad lines: the rest is not read",
                lines=0,
            )
        )

    def chunks(self, *, seconds: float | None = None) -> Iterator[tuple[list[Metric], list[str]]]:
        """Everything left, to the end (a file collected after the job, a job that ended),
        one read (at most MAX_READ_BYTES) at a time, so a caller can store each before the
        next is parsed; with `seconds`, no longer than that (one problem says so)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            before = self._offset
            yield self.read(final=True)
            if self._offset == before or self.stopped:
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.stopped = True
                text = (
                    f"metrics file not read to its end within {seconds:g} s: the rest is not read"
                )
                yield [], [Problem(text, lines=0)]
                return

    def read_all(self, *, seconds: float | None = None) -> tuple[list[Metric], list[str]]:
        """`chunks` in one piece (for a small file: all its metrics are held at once)."""
        metrics: list[Metric] = []
        problems: list[str] = []
        for more, bad in self.chunks(seconds=seconds):
            metrics += more
            problems += bad
        return metrics, problems
