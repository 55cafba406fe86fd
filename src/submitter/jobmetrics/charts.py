"""Metric values as pictures: per-name series, a terminal sparkline, an SVG polyline, a PNG.

Pure functions over the API's items (dicts with `name`, `step`, `value`), shared by
`submitter jobs metrics` and the job page of the web console.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Series:
    name: str
    steps: list[int]
    values: list[float]

    @property
    def last(self) -> float:
        return self.values[-1]


def series(items: Iterable[Mapping[str, Any]]) -> list[Series]:
    """Group values by name, each ordered by step (the API's order already)."""
    grouped: dict[str, list[tuple[int, float]]] = {}
    for item in items:
        grouped.setdefault(str(item["name"]), []).append((int(item["step"]), float(item["value"])))
    out = []
    for name in sorted(grouped):
        points = sorted(grouped[name], key=lambda p: p[0])
        out.append(Series(name, [p[0] for p in points], [p[1] for p in points]))
    return out


def _sample(values: Sequence[float], width: int) -> list[float]:
    """At most `width` values, evenly spaced, the last one always included."""
    if len(values) <= width:
        return list(values)
    return [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]


def sparkline(values: Sequence[float], width: int = 40) -> str:
    shown = _sample(values, width)
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    span = high - low
    if span == 0:
        return BARS[3] * len(shown)
    return "".join(BARS[min(7, int((v - low) / span * 8))] for v in shown)


def svg_points(one: Series, width: int, height: int, pad: int = 4, most: int = 500) -> str:
    """The `points` attribute of an SVG polyline drawing `one` in a width by height box."""
    count = len(one.values)
    if count == 0:
        return ""
    index = [round(i * (count - 1) / (most - 1)) for i in range(most)] if count > most else None
    steps = [one.steps[i] for i in index] if index else one.steps
    values = [one.values[i] for i in index] if index else one.values
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(values), max(values)
    xs = (width - 2 * pad) / ((x1 - x0) or 1)
    ys = (height - 2 * pad) / ((y1 - y0) or 1)
    return " ".join(
        f"{pad + (s - x0) * xs:.1f},{height - pad - (v - y0) * ys:.1f}"
        for s, v in zip(steps, values, strict=True)
    )


def plot_png(all_series: Sequence[Series], target: Path, title: str) -> Path:
    """One line chart per metric, stacked, into a PNG file (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(all_series))
    figure, axes = plt.subplots(rows, 1, figsize=(7, 2.4 * rows), squeeze=False)
    for axis, one in zip(axes[:, 0], all_series, strict=False):
        axis.plot(one.steps, one.values, marker="." if len(one.values) < 50 else None)
        axis.set_title(one.name, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
