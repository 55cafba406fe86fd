"""Small generated tables for the ML tests: a few hundred rows with a signal, strings, nulls."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLORS = ["red", "green", "blue", "grey"]


def features(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numbers (some missing), a whole-number column, a bool and a string category (some
    missing): every dtype the schema knows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "age": rng.integers(18, 80, size=n),
            "member": rng.random(n) < 0.5,
            "color": pd.Series(rng.choice(COLORS, size=n), dtype=object),
        }
    )
    frame.loc[rng.random(n) < 0.1, "x2"] = np.nan
    frame.loc[rng.random(n) < 0.1, "color"] = None
    return frame


def _signal(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    color = frame["color"].map({"red": 1.5, "green": -1.0, "blue": 0.5}).fillna(0.0)
    return (
        2.0 * frame["x1"].to_numpy()
        - frame["x2"].fillna(0).to_numpy()
        + color.to_numpy(dtype=float)
        + 0.5 * frame["member"].to_numpy()
        + rng.normal(scale=0.5, size=len(frame))
    )


def binary(n: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = features(n, seed)
    frame["label"] = np.where(_signal(frame, seed) > 0, "yes", "no")
    return frame


def multiclass(n: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = features(n, seed)
    signal = _signal(frame, seed)
    frame["label"] = np.select([signal < -1, signal < 1], ["low", "mid"], "high")
    return frame


def regression(n: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = features(n, seed)
    frame["y"] = 10 * _signal(frame, seed)
    return frame
