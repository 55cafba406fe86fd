"""Reading a job's metrics file as it grows (pure logic: a real file, no services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from submitter.jobmetrics import HELPER, charts
from submitter.jobmetrics.parse import MAX_LINE_BYTES, Metric, MetricsReader, parse_line


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
