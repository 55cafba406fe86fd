"""The compiled (ONNX) path answers as the scikit-learn path does, for every kind of model we
train; and a pipeline that cannot be compiled falls back to scikit-learn without failing."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from submitter.ml import blend
from submitter.ml.compiled import PROBABILITY_TOLERANCE, CompiledModel, compile_pipeline
from submitter.ml.features import feature_schema, model_frame
from submitter.ml.models import HAS_LIGHTGBM, spec
from submitter.ml.pipeline import build_pipeline
from submitter.registry.predictors import Served, predict_version

ROWS = 300


def _frame(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=ROWS),
            "x2": np.where(rng.random(ROWS) < 0.1, np.nan, rng.normal(size=ROWS)),
            "n": rng.integers(0, 5, size=ROWS),
            # "w" is rare: below the encoders' min_frequency, so pooled as infrequent.
            "city": rng.choice(
                ["oulu", "turku", "espoo", "w"], size=ROWS, p=[0.5, 0.3, 0.18, 0.02]
            ),
        }
    )
    frame.loc[::11, "city"] = None
    return frame


def _target(frame: pd.DataFrame, kind: str) -> Any:
    score = frame["x1"] - frame["x2"].fillna(0) + (frame["city"] == "oulu") * 1.0
    if kind == "binary":
        return np.where(score > 0, "yes", "no").astype(object)
    if kind == "multiclass":
        return np.digitize(score, [-0.7, 0.7]).astype("int64")
    return (3.0 * score + frame["n"]).to_numpy(dtype="float64")


REQUEST_ROWS = [
    {"x1": 2.0, "x2": -1.0, "n": 1, "city": "oulu"},
    {"x1": -2.0, "x2": 1.0, "n": 3, "city": "helsinki"},  # a category never seen
    {"x1": 0.1, "x2": None, "n": 0, "city": None},  # missing values
    {"x1": 0.3, "x2": 0.2, "n": 2, "city": "w"},  # an infrequent category
]

CASES = [
    (kind, model)
    for kind in ("binary", "multiclass", "regression")
    for model in ("lr", "dt", "et", *(["lightgbm"] if HAS_LIGHTGBM else []))
] + [("regression", "ridge"), ("binary", "ridge")]


@pytest.mark.parametrize(("kind", "model"), CASES)
def test_compiled_and_sklearn_give_the_same_answers(kind: str, model: str) -> None:
    frame = _frame()
    y = _target(frame, kind)
    task = "regression" if kind == "regression" else "classification"
    schema = feature_schema(frame)
    X = model_frame(frame, schema)
    pipeline, fit_params = build_pipeline(schema, spec(model), task, ROWS, 0)
    pipeline.fit(X.iloc[:200], y[:200], **fit_params)
    classes = sorted(set(y.tolist())) if task == "classification" else None
    compilation = compile_pipeline(pipeline, schema, task, classes, X.iloc[200:])
    assert compilation.serving["path"] == "onnx", compilation.serving
    assert compilation.onnx is not None

    version = SimpleNamespace(
        model_name="m", version=1, feature_schema=schema, task=task, classes=classes
    )
    compiled = CompiledModel(
        compilation.onnx,
        schema,
        task,
        classes,
        probabilities=compilation.serving["probabilities"],
    )
    fast = predict_version(version, Served(compiled, None, 1), REQUEST_ROWS)  # type: ignore[arg-type]
    slow = predict_version(version, Served(None, pipeline, 1), REQUEST_ROWS)  # type: ignore[arg-type]
    assert fast.keys() == slow.keys()
    if task == "regression":
        assert np.allclose(fast["predictions"], slow["predictions"], rtol=1e-4, atol=1e-4)
    else:
        assert fast["predictions"] == slow["predictions"]
        assert [type(v) for v in fast["predictions"]] == [type(v) for v in slow["predictions"]]
    if "probabilities" in slow:
        diff = np.abs(np.array(fast["probabilities"]) - np.array(slow["probabilities"]))
        assert diff.max() <= PROBABILITY_TOLERANCE


def test_what_cannot_be_compiled_is_served_by_sklearn_with_the_reason() -> None:
    frame = _frame()
    y = _target(frame, "binary")
    schema = feature_schema(frame)
    X = model_frame(frame, schema)
    # HGB with native categorical splits: skl2onnx would treat them as thresholds.
    pipeline, fit_params = build_pipeline(schema, spec("hgb"), "classification", ROWS, 0)
    pipeline.fit(X, y, **fit_params)
    compilation = compile_pipeline(pipeline, schema, "classification", ["no", "yes"], X)
    assert compilation.onnx is None
    assert compilation.serving["path"] == "sklearn"
    assert "categorical" in compilation.serving["reason"]
    # No rows to check against: not compiled, never a failure.
    none = compile_pipeline(pipeline, schema, "classification", ["no", "yes"], X.iloc[:0])
    assert none.serving["path"] == "sklearn" and "holdout" in none.serving["reason"]


def test_hgb_on_numbers_only_is_compiled() -> None:
    frame = _frame().drop(columns=["city"])
    y = _target(_frame(), "binary")
    schema = feature_schema(frame)
    X = model_frame(frame, schema)
    pipeline, fit_params = build_pipeline(schema, spec("hgb"), "classification", ROWS, 0)
    pipeline.fit(X.iloc[:200], y[:200], **fit_params)
    compilation = compile_pipeline(pipeline, schema, "classification", ["no", "yes"], X.iloc[200:])
    assert compilation.serving["path"] == "onnx", compilation.serving
    assert not math.isnan(compilation.serving["max_difference"])


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_a_blend_is_compiled_or_served_by_sklearn_never_a_failure(kind: str) -> None:
    """A winning blend (a Voting estimator of whole pipelines) registers either way: as ONNX
    that passed the parity check, or as scikit-learn with the reason."""
    frame = _frame()
    y = _target(frame, kind)
    task = "regression" if kind == "regression" else "classification"
    schema = feature_schema(frame)
    X = model_frame(frame, schema)
    members = []
    for name in ("lr", "et"):
        pipeline, fit_params = build_pipeline(schema, spec(name), task, 200, 0)
        members.append((name, pipeline.fit(X.iloc[:200], y[:200], **fit_params)))
    pipeline = blend.assemble(members, task, y[:200])
    classes = ["no", "yes"] if task == "classification" else None
    compilation = compile_pipeline(pipeline, schema, task, classes, X.iloc[200:])
    if compilation.serving["path"] == "sklearn":
        assert compilation.onnx is None and compilation.serving["reason"]
    else:
        assert compilation.onnx is not None
        assert compilation.serving["max_difference"] is not None
    # Served by scikit-learn it answers raw rows too (a one-step pipeline: nothing to
    # preprocess first; the members do their own).
    version = SimpleNamespace(
        model_name="m", version=1, feature_schema=schema, task=task, classes=classes
    )
    answer = predict_version(version, Served(None, pipeline, 1), REQUEST_ROWS)  # type: ignore[arg-type]
    assert len(answer["predictions"]) == len(REQUEST_ROWS)
    assert ("probabilities" in answer) == (task == "classification")
