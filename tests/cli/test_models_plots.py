"""`submitter models show NAME --plots DIR`: a real API and worker as processes, real files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.cli.test_cli import embedded, run, served

__all__ = ["embedded", "served"]  # fixtures used below, defined with the other CLI tests

PLOTS = ["confusion.png", "cv_scores.png", "importance.png", "pr.png", "roc.png"]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_models_show_plots_downloads_the_files_and_prints_their_paths(
    served: dict[str, str], tmp_path: Path
) -> None:
    rows = ["x,y,label"] + [
        f"{i % 7},{(i * 3) % 5},{'a' if i % 7 > 3 else 'b'}" for i in range(120)
    ]
    csv = tmp_path / "toy.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert run(served, "datasets", "upload", str(csv), "--name", "toy").returncode == 0
    spec = json.dumps(
        {"dataset": "toy", "target": "label", "model_name": "toy", "models": ["lr"], "folds": 2}
    )
    for _ in range(2):
        trained = run(served, "jobs", "submit", "train", "--spec", spec, "--wait", timeout=180)
        assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "plots: submitter models show toy --version 2 --plots DIR" in trained.stdout

    folder = tmp_path / "out" / "latest"  # created if missing
    shown = run(served, "models", "show", "toy", "--plots", str(folder))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    paths = [Path(line) for line in shown.stdout.splitlines()]
    assert sorted(p.name for p in paths) == PLOTS and {p.parent for p in paths} == {folder}
    for path in paths:
        assert path.is_file() and _png_size(path) == (800, 600)

    pinned = run(
        served, "models", "show", "toy", "--version", "1", "--plots", str(tmp_path / "v1"), "--json"
    )
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert sorted(Path(p).name for p in json.loads(pinned.stdout)) == PLOTS
    assert (tmp_path / "v1" / "roc.png").read_bytes() != (folder / "roc.png").read_bytes()

    table = run(served, "models", "show", "toy", "--version", "1", "--json")
    assert [v["version"] for v in json.loads(table.stdout)] == [1]
    assert json.loads(table.stdout)[0]["plots"] == [f"plots/{name}" for name in PLOTS]

    missing = run(served, "models", "show", "toy", "--version", "7", "--plots", str(tmp_path))
    assert missing.returncode == 1 and "404" in missing.stderr
    unknown = run(served, "models", "show", "nope", "--plots", str(tmp_path))
    assert unknown.returncode == 1 and "404" in unknown.stderr
