"""Reading a job's metrics file as it grows (pure logic: a real file, no services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from submitter.jobmetrics import HELPER, charts
from submitter.jobmetrics import parse as parse_module
from submitter.jobmetrics.parse import MAX_LINE_BYTES, Metric, MetricsReader, parse_line
from submitter.jobmetrics.service import Follower, MetricsSink


def test_lines_are_read_as_they_are_completed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.read() == ([], [])  # not written yet
    with open(path, "a") as out:
        out.write('{"name": "loss", "value": 0.5, "step": 1}\n{"name": "loss", "val')
    assert reader.read() == ([Metric("loss", 0.5, 1)], [])  # half a line waits
    with open(path, "a") as out:
        out.write('ue": 0.25}\n')
    assert reader.read() == ([Metric("loss", 0.25, None)], [])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "", "value": 1}', "name must be"),
        ('{"name": "a", "value": "1"}', "is not a number"),
        ('{"name": "a", "value": true}', "is not a number"),
        ('{"name": "a", "value": NaN}', "is not finite"),
        ('{"name": "a", "value": 1, "step": -1}', "step of 'a'"),
        ('{"name": "a", "value": 1, "step": 1.5}', "step of 'a'"),
    ],
)
def test_a_bad_line_is_skipped_with_the_reason(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_line(line)


def test_an_overlong_line_is_skipped_without_being_kept(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    path.write_text("x" * (MAX_LINE_BYTES + 10))
    _, problems = reader.read()
    with open(path, "a") as out:
        out.write("x" * MAX_LINE_BYTES + '\n{"name": "ok", "value": 1}\n')
    metrics, more = reader.read()
    assert len(problems + more) == 1 and "longer than" in (problems + more)[0]
    assert metrics == [Metric("ok", 1.0, None)]


def test_the_helper_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    env = {"SUBMITTER_METRICS": str(path), "PYTHONPATH": str(HELPER.parent)}
    # -S: no site packages, so neither Submitter nor any of its dependencies is importable.
    code = "import submitter_metrics as m; m.log('a', 1, step=2)"
    subprocess.run([sys.executable, "-S", "-c", code], check=True, env={**os.environ, **env})
    run = subprocess.run(
        [sys.executable, "-S", "-m", "submitter_metrics", "b", "0.5"],
        env={**os.environ, **env},
        check=False,
    )
    assert run.returncode == 0
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [
        {"name": "a", "value": 1.0, "step": 2},
        {"name": "b", "value": 0.5, "step": None},
    ]


def test_sparkline_and_chart_points() -> None:
    items = [{"name": "loss", "step": s, "value": 1 / (s + 1)} for s in range(100)]
    (loss,) = charts.series(items)
    line = charts.sparkline(loss.values, width=20)
    assert len(line) == 20 and line[0] == "█" and line[-1] == "▁"
    points = charts.svg_points(loss, 100, 50).split()
    assert points[0] == "4.0,4.0" and points[-1] == "96.0,46.0"


# A hostile job owns its metrics file and the folder holding it: whatever it puts there,
# the reader returns at once, reports one problem, never reads anything but a regular file
# inside its root, and quotes no more of it than a short, escaped excerpt.

SECRET = "admin-key-0123456789abcdef"
LINE = '{"name": "loss", "value": 0.5}\n'


def _job_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A job folder (the trusted root) and its `.submitter/metrics.jsonl`."""
    root = tmp_path / "job"
    (root / ".submitter").mkdir(parents=True)
    return root, root / ".submitter" / "metrics.jsonl"


def _a_worker_file(tmp_path: Path) -> Path:
    """A file of the worker's, outside the job folder, with lines that look like problems."""
    secret = tmp_path / "worker" / "submitter.db"
    secret.parent.mkdir()
    secret.write_text(f"{SECRET}\n" * 3 + LINE)
    return secret


def _refused_once(reader: MetricsReader, what: str) -> None:
    metrics, problems = reader.read()
    assert metrics == [] and len(problems) == 1, problems
    assert "not a" in problems[0] and what in problems[0], problems
    assert getattr(problems[0], "lines", None) == 0  # about the file, not a bad line
    assert reader.read() == ([], [])  # reported once
    assert reader.read_all() == ([], [])


@pytest.mark.timeout(10)
def test_a_fifo_is_not_read_and_does_not_block(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    os.mkfifo(path)
    reader = MetricsReader(path, root=root)
    _refused_once(reader, "a FIFO")
    assert reader.stopped


@pytest.mark.timeout(10)
def test_a_fifo_with_a_writer_is_not_read(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    os.mkfifo(path)
    # A writer that has the FIFO open and writes metrics into it: still not read.
    writer = subprocess.Popen(
        ["sh", "-c", f"while :; do printf '%s' '{LINE.strip()}\n'; done > {path}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        _refused_once(MetricsReader(path, root=root), "a FIFO")
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.timeout(10)
def test_a_link_to_dev_zero_is_not_read(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    path.symlink_to("/dev/zero")
    _refused_once(MetricsReader(path, root=root), "a symbolic link")


@pytest.mark.timeout(10)
def test_a_link_to_a_worker_file_is_not_read(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    path.symlink_to(_a_worker_file(tmp_path))
    reader = MetricsReader(path, root=root)
    metrics, problems = reader.read_all()
    assert metrics == [] and len(problems) == 1 and "a symbolic link" in problems[0]
    assert SECRET not in "".join(problems)


@pytest.mark.timeout(10)
def test_a_hard_link_to_a_worker_file_is_not_read(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    os.link(_a_worker_file(tmp_path), path)
    metrics, problems = MetricsReader(path, root=root).read_all()
    assert metrics == [] and len(problems) == 1 and "2 names" in problems[0], problems
    assert SECRET not in "".join(problems)


@pytest.mark.timeout(10)
def test_a_linked_folder_is_not_followed(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    secret = _a_worker_file(tmp_path)
    # The job swaps `.submitter` for a link to the worker's folder holding a metrics file.
    (root / ".submitter").rmdir()
    (root / ".submitter").symlink_to(secret.parent)
    (secret.parent / "metrics.jsonl").write_text(LINE + SECRET + "\n")
    reader = MetricsReader(path, root=root)
    metrics, problems = reader.read()
    assert metrics == [] and len(problems) == 1, problems
    assert "'.submitter' is not a folder (a symbolic link)" in problems[0]
    assert SECRET not in "".join(problems)
    assert reader.read() == ([], [])


@pytest.mark.timeout(10)
def test_a_device_or_folder_in_place_of_the_file_is_not_read(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    path.mkdir()
    _refused_once(MetricsReader(path, root=root), "a folder")


def test_the_path_must_be_inside_the_root(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    with pytest.raises(ValueError, match="not inside"):
        MetricsReader(tmp_path / "elsewhere.jsonl", root=root)
    with pytest.raises(ValueError, match="not a file inside"):
        MetricsReader(root / ".." / "x.jsonl", root=root)
    assert MetricsReader(path).root == path.parent  # default: its folder


@pytest.mark.timeout(10)
def test_a_missing_folder_or_file_is_not_yet(tmp_path: Path) -> None:
    root = tmp_path / "job"
    reader = MetricsReader(root / ".submitter" / "metrics.jsonl", root=root)
    assert reader.read() == ([], [])  # neither root nor folder yet
    root.mkdir()
    assert reader.read() == ([], [])
    (root / ".submitter").mkdir()
    assert reader.read() == ([], [])
    (root / ".submitter" / "metrics.jsonl").write_text(LINE)
    assert reader.read() == ([Metric("loss", 0.5, None)], [])


@pytest.mark.timeout(10)
def test_a_growing_file_is_read_to_a_bound(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    bound = 10 * len(LINE)
    reader = MetricsReader(path, root=root, max_bytes=bound)
    path.write_text(LINE * 4)
    assert reader.read() == ([Metric("loss", 0.5, None)] * 4, [])
    with open(path, "a") as out:  # an endless writer: 20 more lines
        out.write(LINE * 20)
    metrics, problems = reader.read()
    assert len(metrics) == 6  # up to the bound, not one byte further
    assert len(problems) == 1 and f"larger than {bound} bytes" in problems[0]
    with open(path, "a") as out:
        out.write(LINE)
    assert reader.read() == ([], []) and reader.read_all() == ([], [])


@pytest.mark.timeout(10)
def test_the_bound_is_the_module_constant_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, path = _job_folder(tmp_path)
    monkeypatch.setattr(parse_module, "MAX_FILE_BYTES", 3 * len(LINE))
    monkeypatch.setattr(parse_module, "MAX_READ_BYTES", 2 * len(LINE))  # several reads
    path.write_text(LINE * 5)
    metrics, problems = MetricsReader(path, root=root).read_all()
    assert len(metrics) == 3 and len(problems) == 1 and "larger than" in problems[0]


@pytest.mark.timeout(10)
def test_a_file_of_zeros_is_read_to_the_bound_holding_no_more_than_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, path = _job_folder(tmp_path)
    monkeypatch.setattr(parse_module, "MAX_READ_BYTES", 64 << 10)
    with open(path, "wb") as out:
        out.truncate(1 << 30)  # sparse: 1 GiB of zeros, no newline
    reader = MetricsReader(path, root=root, max_bytes=1 << 20)
    metrics, problems = reader.read()
    assert metrics == [] and problems == [f"a line longer than {MAX_LINE_BYTES} bytes"]
    assert len(reader._partial) <= MAX_LINE_BYTES
    metrics, problems = reader.read_all()
    assert metrics == [] and len(problems) == 1 and "larger than" in problems[0]


def test_reading_what_is_left_is_bounded_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, path = _job_folder(tmp_path)
    monkeypatch.setattr(parse_module, "MAX_READ_BYTES", 2 * len(LINE))
    path.write_text(LINE * 5)
    reader = MetricsReader(path, root=root)
    chunks = list(reader.chunks(seconds=0))  # one read, then out of time
    assert chunks[0] == ([Metric("loss", 0.5, None)] * 2, [])
    assert len(chunks) == 2 and chunks[1][0] == []
    assert chunks[1][1] == ["metrics file not read to its end within 0 s: the rest is not read"]
    assert reader.read_all() == ([], [])
    # Without a bound, a read at a time to the end.
    chunks = list(MetricsReader(path, root=root).chunks())
    assert [len(metrics) for metrics, _ in chunks] == [2, 2, 1, 0]


def test_a_regular_file_is_still_read_incrementally(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    reader = MetricsReader(path, root=root)
    with open(path, "a") as out:
        out.write(LINE + '{"name": "acc", "val')
    assert reader.read() == ([Metric("loss", 0.5, None)], [])
    assert reader.read() == ([], [])
    with open(path, "a") as out:
        out.write('ue": 0.75, "step": 3}\n\n  \n' + LINE)
    assert reader.read() == ([Metric("acc", 0.75, 3), Metric("loss", 0.5, None)], [])
    with open(path, "a") as out:
        out.write('{"name": "last", "value": 1}')  # no newline: the job ended mid-line
    assert reader.read() == ([], [])
    assert reader.read_all() == ([Metric("last", 1.0, None)], [])


def test_a_line_across_reads_is_not_cut_in_a_final_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, path = _job_folder(tmp_path)
    monkeypatch.setattr(parse_module, "MAX_READ_BYTES", len(LINE) + 5)  # ends mid-line
    path.write_text(LINE * 3)
    assert MetricsReader(path, root=root).read_all() == ([Metric("loss", 0.5, None)] * 3, [])


def test_a_bad_line_is_quoted_short_and_escaped(tmp_path: Path) -> None:
    root, path = _job_folder(tmp_path)
    path.write_text("\x1b[31m" + "y" * 300 + "\n")
    _, problems = MetricsReader(path, root=root).read()
    assert len(problems) == 1 and problems[0].startswith("not JSON")
    assert "\x1b" not in problems[0] and "\\x1b" in problems[0]  # escaped
    assert "y" * 61 not in problems[0] and problems[0].endswith("...")


@pytest.mark.timeout(10)
def test_a_file_of_bad_lines_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, path = _job_folder(tmp_path)
    monkeypatch.setattr(parse_module, "MAX_BAD_LINES", 3)
    path.write_text("bad\n" * 2 + LINE + "bad\n" * 10 + LINE)
    reader = MetricsReader(path, root=root)
    metrics, problems = reader.read()
    assert metrics == [Metric("loss", 0.5, None)]
    assert [getattr(p, "lines", None) for p in problems] == [1, 1, 1, 0]
    assert "more than 3 bad lines: the rest is not read" in problems[-1]
    assert reader.read_all() == ([], [])


class _Sink(MetricsSink):
    """A sink without a database: what the follower hands it, and its log."""

    def __init__(self) -> None:
        self.job_id, self.limit = "job-1", 1000
        self.count = self.dropped = self.problems = 0
        self._next_step: dict[str, int] = {}
        self.lines: list[str] = []
        self.got: list[Metric] = []

    def log(self, text: str, level: str = "INFO") -> None:  # type: ignore[override]
        self.lines.append(text)

    def add(self, metrics: Any, problems: Any) -> None:
        self.got += metrics
        super().add([], problems)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("hostile", ["fifo", "dev-zero"])
def test_the_follower_finishes_at_once(tmp_path: Path, hostile: str) -> None:
    root, path = _job_folder(tmp_path)
    path.write_text(LINE)
    sink = _Sink()
    follower = Follower(sink, path, interval=0.05, root=root)
    follower.start()
    started = time.monotonic()
    while not sink.got and time.monotonic() - started < 5:
        time.sleep(0.01)
    path.unlink()  # what the job does: rm -f "$SUBMITTER_METRICS"; mkfifo "$SUBMITTER_METRICS"
    if hostile == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    time.sleep(0.2)
    started = time.monotonic()
    follower.finish()
    assert time.monotonic() - started < 2 and not follower.is_alive()
    assert sink.got == [Metric("loss", 0.5, None)]
    refused = [line for line in sink.lines if "not a regular file" in line]
    assert len(refused) == 1, sink.lines
    assert "line skipped" not in refused[0] and sink.problems == 0
