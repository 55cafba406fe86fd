"""Model comparison end to end on small generated tables (a few hundred rows each)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from submitter.ml import models as catalogue
from submitter.ml.features import check_rows
from submitter.ml.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from submitter.ml.models import DEFAULT_MODELS, ModelSpec
from submitter.ml.training import TrainingStopped, resolve_task, train
from tests.ml import data

FAST = ["lr", "dt", "hgb"]


def assert_leaderboard(result, names: tuple[str, ...], metric: str, higher_is_better: bool) -> None:
    board = result.leaderboard
    for row in board:
        for name in names:
            assert name in row and f"{name}_std" in row
        assert row["fit_seconds"] >= 0 and row["folds"] == 3
    values = [row[metric] for row in board]
    assert values == sorted(values, reverse=higher_is_better)
    assert result.best_model == board[0]["model"]
    assert set(result.holdout_metrics) == set(names)


def test_binary_with_strings_and_missing_values() -> None:
    frame = data.binary()
    result = train(frame, "label", models=FAST, folds=3)

    assert (result.task, result.metric, result.classes) == ("classification", "AUC", ["no", "yes"])
    assert_leaderboard(result, CLASSIFICATION_METRICS, "AUC", higher_is_better=True)
    assert result.leaderboard[0]["AUC"] > 0.85
    assert (result.holdout_metrics["AUC"] or 0) > 0.8
    assert result.settings["positive_class"] == "yes"
    assert result.settings["rows_holdout"] == 60
    assert {f["name"] for f in result.feature_schema} == {"x1", "x2", "age", "member", "color"}

    # Raw rows, with nulls and a category never seen in training, predict through the pipeline.
    rows = [
        {"x1": 2.0, "x2": None, "age": 40, "member": True, "color": "purple"},
        {"x1": -2.0, "x2": 1.0, "age": None, "member": None, "color": None},
    ]
    X = check_rows(result.feature_schema, rows)
    assert list(result.pipeline.predict(X)) == ["yes", "no"]
    assert result.pipeline.predict_proba(X).shape == (2, 2)


def test_multiclass_defaults_to_accuracy_and_reports_ovr_auc() -> None:
    result = train(data.multiclass(), "label", models=["lr", "hgb"], folds=3)
    assert result.task == "classification"
    assert result.metric == "Accuracy"
    assert result.classes == ["high", "low", "mid"]
    assert_leaderboard(result, CLASSIFICATION_METRICS, "Accuracy", higher_is_better=True)
    assert all(row["AUC"] is not None and row["AUC"] > 0.8 for row in result.leaderboard)


def test_regression_with_a_lower_is_better_metric() -> None:
    frame = data.regression()
    result = train(frame, "y", models=FAST, folds=3, metric="rmse")
    assert (result.task, result.metric, result.classes) == ("regression", "RMSE", None)
    assert_leaderboard(result, REGRESSION_METRICS, "RMSE", higher_is_better=False)
    assert (result.holdout_metrics["R2"] or 0) > 0.8
    assert result.holdout_metrics["RMSLE"] is None  # negative targets: undefined
    assert all(row["RMSLE"] is None for row in result.leaderboard)
    assert result.settings["task_rule"].startswith("auto: numeric target")


def test_rmsle_is_reported_for_non_negative_targets() -> None:
    frame = data.regression()
    frame["y"] = frame["y"] - frame["y"].min()
    result = train(frame, "y", models=["lr"], folds=3)
    assert result.leaderboard[0]["RMSLE"] is not None
    assert result.holdout_metrics["RMSLE"] is not None


def test_default_models_on_an_arrow_table() -> None:
    table = pa.Table.from_pandas(data.binary(n=400), preserve_index=False)
    result = train(table, "label", folds=3, seed=1)
    assert [r["model"] for r in result.leaderboard] != []
    assert {r["model"] for r in result.leaderboard} == set(DEFAULT_MODELS)
    assert result.skipped == [] and result.failed == {}
    assert isinstance(result.params, dict) and result.params


def test_task_rule() -> None:
    frame = data.features()
    small_ints = frame["age"] % 5
    assert resolve_task("auto", small_ints)[0] == "classification"
    assert resolve_task("auto", frame["age"])[0] == "regression"  # 62 distinct values
    assert resolve_task("auto", frame["member"])[0] == "classification"
    assert resolve_task("auto", frame["color"].fillna("none"))[0] == "classification"
    assert resolve_task("auto", small_ints.astype(float))[0] == "classification"
    assert resolve_task("auto", frame["x1"])[0] == "regression"
    with pytest.raises(ValueError, match="numeric target"):
        resolve_task("regression", frame["color"])


def test_integer_target_with_few_values_is_classified_and_nulls_dropped() -> None:
    frame = data.binary()
    frame["label"] = (frame["label"] == "yes").astype(float)
    frame.loc[:9, "label"] = np.nan
    result = train(frame, "label", models=["lr"], folds=3)
    assert result.task == "classification" and result.classes == [0, 1]
    assert result.settings["rows_dropped_null_target"] == 10


def test_progress_is_reported_after_every_model_and_fold() -> None:
    calls: list[tuple[int, int, str, int]] = []
    train(
        data.binary(), "label", models=["lr", "dt"], folds=4, on_progress=lambda *a: calls.append(a)
    )
    assert [c[0] for c in calls] == list(range(1, 9))
    assert {c[1] for c in calls} == {8}
    assert sorted((c[2], c[3]) for c in calls) == [
        (m, f) for m in ("dt", "lr") for f in (1, 2, 3, 4)
    ]


def test_should_stop_raises_between_folds() -> None:
    calls: list[int] = []
    polls = iter(range(1000))

    def stop() -> bool:
        return next(polls) >= 3

    with pytest.raises(TrainingStopped):
        train(
            data.binary(),
            "label",
            models=["lr", "dt"],
            folds=5,
            on_progress=lambda done, *_: calls.append(done),
            should_stop=stop,
        )
    assert 0 < len(calls) < 10


def test_time_budget_finishes_one_model_and_skips_the_rest() -> None:
    result = train(
        data.binary(), "label", models=["dt", "lr", "hgb"], folds=3, time_budget_seconds=0
    )
    assert [r["model"] for r in result.leaderboard] == ["dt"]
    assert result.best_model == "dt"
    assert result.skipped == ["lr", "hgb"]


def test_a_failing_model_is_recorded_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def get_params(self, deep: bool = True) -> dict:
            return {}

        def set_params(self, **params: object) -> Broken:
            return self

        def fit(self, X: object, y: object) -> Broken:
            raise RuntimeError("boom")

    broken = ModelSpec("broken", "Broken", "onehot", lambda task, n, seed: Broken())
    monkeypatch.setitem(catalogue.CATALOGUE, "broken", broken)
    result = train(data.binary(), "label", models=["broken", "lr"], folds=3)
    assert result.best_model == "lr"
    assert "boom" in result.failed["broken"]
    assert result.skipped == []


def test_bad_arguments() -> None:
    frame = data.binary()
    with pytest.raises(ValueError, match="unknown model"):
        train(frame, "label", models=["nope"])
    with pytest.raises(ValueError, match="unknown classification metric"):
        train(frame, "label", models=["lr"], metric="R2")
    with pytest.raises(ValueError, match="not in the data"):
        train(frame, "missing", models=["lr"])
    frame["label"] = "yes"
    with pytest.raises(ValueError, match="single class"):
        train(frame, "label", models=["lr"])


def test_holdout_zero_refits_on_everything() -> None:
    result = train(data.regression(), "y", models=["lr"], folds=3, holdout=0)
    assert result.holdout_metrics == {}
    assert result.settings["rows_train"] == 300
    assert math.isfinite(result.leaderboard[0]["R2"])
