"""Model comparison end to end on small generated tables (a few hundred rows each)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from submitter.ml import blend, modelfile
from submitter.ml import models as catalogue
from submitter.ml.features import check_rows, feature_schema, model_frame
from submitter.ml.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from submitter.ml.models import HAS_LIGHTGBM, ModelSpec, default_models, spec
from submitter.ml.pipeline import build_pipeline
from submitter.ml.training import TrainingStopped, resolve_task, split_rows, train
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
    expected = {*default_models("classification", 320), blend.NAME}
    assert {r["model"] for r in result.leaderboard} == expected
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

    broken = ModelSpec("broken", "Broken", "onehot", lambda task, n, seed, k: Broken())
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


def test_the_blend_is_scored_on_the_same_folds_from_out_of_fold_probabilities() -> None:
    """The blend's fold scores are its members' averaged validation probabilities on the very
    folds the members were scored on: refitting the members by hand on `split_rows`' folds
    and averaging gives the same numbers."""
    frame = data.binary(n=400)
    result = train(frame, "label", models=["lr", "nb", "et"], folds=3)
    row = next(r for r in result.leaderboard if r["model"] == blend.NAME)
    members = result.settings["blend"]
    assert row["label"] == blend.label(members, result.settings["blend_weights"])
    assert 2 <= len(members) <= 3
    assert row["folds"] == 3 and row["fit_seconds"] > 0
    assert set(members) <= {"lr", "nb", "et"}

    schema = feature_schema(frame, "label")
    X, y = model_frame(frame, schema), frame["label"].to_numpy()
    train_idx, _, splits = split_rows(y, "classification", folds=3)
    X, y = X.iloc[train_idx].reset_index(drop=True), y[train_idx]
    for fold, (fit_idx, val_idx) in enumerate(splits):
        probabilities = []
        for name in members:
            pipeline, fit_params = build_pipeline(schema, spec(name), "classification", len(y), 0)
            pipeline.fit(X.iloc[fit_idx], y[fit_idx], **fit_params)
            probabilities.append(pipeline.predict_proba(X.iloc[val_idx])[:, 1])
        average = np.average(probabilities, axis=0, weights=result.settings["blend_weights"])
        expected = roc_auc_score(y[val_idx] == "yes", average)
        assert result.fold_scores[blend.NAME][fold]["AUC"] == pytest.approx(expected)
    assert row["AUC"] == pytest.approx(np.mean([f["AUC"] for f in result.fold_scores["blend"]]))


def test_a_winning_blend_is_refit_predicts_raw_rows_and_round_trips(tmp_path: Path) -> None:
    """Regression and multiclass: when the blend tops the leaderboard, the pipeline is the
    average of its refit members, predicts raw rows and loads back through skops."""
    bent = data.regression()
    bent["y"] = bent["y"] + 10 * np.abs(bent["x1"])  # neither lr nor et is right alone
    cases = [(bent, "y", ["lr", "et"]), (data.multiclass(), "label", ["nb", "et", "knn"])]
    for frame, target, models in cases:
        result = train(frame, target, models=models, folds=3)
        assert result.best_model == blend.NAME, result.leaderboard
        voting = result.pipeline.named_steps["model"]
        assert [name for name, _ in voting.estimators] == result.settings["blend"]
        assert result.params["members"] == result.settings["blend"]
        X = result.X_holdout
        assert X is not None
        if result.task == "regression":
            predictions = [est.predict(X) for est in voting.estimators_]
            members = np.average(predictions, axis=0, weights=result.settings["blend_weights"])
            np.testing.assert_allclose(result.pipeline.predict(X), members)
        else:
            probabilities = [est.predict_proba(X) for est in voting.estimators_]
            members = np.average(probabilities, axis=0, weights=result.settings["blend_weights"])
            np.testing.assert_allclose(result.pipeline.predict_proba(X), members)
            assert set(result.pipeline.predict(X)) <= set(result.classes or [])
        path = tmp_path / f"{target}.skops"
        modelfile.save(result.pipeline, path)
        loaded = modelfile.load(path)
        np.testing.assert_array_equal(loaded.predict(X), result.pipeline.predict(X))


def test_blend_false_and_models_without_probabilities_are_left_out() -> None:
    frame = data.binary()
    result = train(frame, "label", models=["lr", "dt"], folds=3, blend=False)
    assert blend.NAME not in {r["model"] for r in result.leaderboard}
    # ridge and svm have no predict_proba: one model with probabilities makes no blend.
    result = train(frame, "label", models=["lr", "ridge", "svm"], folds=3)
    assert blend.NAME not in {r["model"] for r in result.leaderboard}
    assert result.settings["blend"] == []


def test_default_models_depend_on_the_task_and_size() -> None:
    small_classes = default_models("classification", 1000)
    assert {"lda", "qda", "nb", "knn"} <= set(small_classes)
    assert not {"br", "en"} & set(small_classes)
    regression = default_models("regression", 1000)
    assert {"ridge", "br", "en"} <= set(regression)
    assert not {"lda", "qda", "nb"} & set(regression)
    assert "knn" not in default_models("classification", 50_000)
    boosters = {"hgb", "lightgbm"} & set(default_models("regression", 50_000))
    assert boosters == {"lightgbm" if HAS_LIGHTGBM else "hgb"}


def test_a_named_model_of_the_other_task_is_left_out() -> None:
    result = train(data.regression(), "y", models=["lda", "lr"], folds=3, blend=False)
    assert [r["model"] for r in result.leaderboard] == ["lr"]
    assert result.settings["models_not_for_task"] == ["lda"]
    with pytest.raises(ValueError, match="none of the models"):
        train(data.regression(), "y", models=["qda"], folds=3)


@pytest.mark.parametrize("classes", [["no", "yes"], [0, 1, 2, 3], [False, True]])
def test_label_metrics_read_off_the_confusion_matrix_match_scikit_learn(classes: list) -> None:
    from sklearn import metrics as skm

    from submitter.ml.metrics import scores_from_predictions

    rng = np.random.default_rng(len(classes))
    values = np.array(classes, dtype=object)
    cases = [(200, None)] + ([(30, classes[-1])] if len(classes) > 2 else [])
    for n, drop in cases:  # multiclass: also a class absent from the truth and the guesses
        pool = values if drop is None else values[values != drop]
        y, guess = rng.choice(pool, size=n), rng.choice(pool, size=n)
        if not isinstance(classes[0], str):  # as `train` holds them: bool or int64 arrays
            y, guess = y.astype(type(classes[0])), guess.astype(type(classes[0]))
        got = scores_from_predictions(y, guess, None, classes)
        binary = len(classes) == 2
        kw = {"average": "binary" if binary else "macro", "zero_division": 0}
        kw |= {"pos_label": classes[1]} if binary else {}
        assert got["Accuracy"] == pytest.approx(skm.accuracy_score(y, guess))
        assert got["Recall"] == pytest.approx(skm.recall_score(y, guess, **kw))
        assert got["Precision"] == pytest.approx(skm.precision_score(y, guess, **kw))
        assert got["F1"] == pytest.approx(skm.f1_score(y, guess, **kw))
        assert got["Kappa"] == pytest.approx(skm.cohen_kappa_score(y, guess))
        assert got["MCC"] == pytest.approx(skm.matthews_corrcoef(y, guess))
