"""The training plots: real training runs on small tables, real matplotlib, decoded PNGs."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from submitter.ml import plots
from submitter.ml.models import spec
from submitter.ml.plots import PlotContext, permutation_importances, training_plots
from submitter.ml.training import TrainResult, train
from tests.ml import data

CONTEXT = PlotContext("churn", 3, "Decision Tree", "customers", 2)
WIDTH, HEIGHT = 800, 600


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (the IHDR chunk comes first)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def assert_legible_png(png: bytes) -> None:
    """800 x 600, decodable, and with something drawn: not a blank or one-colour canvas."""
    assert png_size(png) == (WIDTH, HEIGHT)
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    rgb = pixels[..., :3]
    inked = (rgb < 0.95).any(axis=-1).mean()
    assert 0.02 < inked < 0.9, f"{inked:.1%} of the pixels are not white"
    assert len(np.unique((rgb * 255).astype(int).reshape(-1, 3), axis=0)) > 20


def cv_scores(result: TrainResult) -> dict[str, list[Any]]:
    return {
        row["label"]: [fold[result.metric] for fold in result.fold_scores[row["model"]]]
        for row in result.leaderboard
    }


def plot_all(result: TrainResult, **extra: Any) -> plots.PlotSet:
    return training_plots(
        result.pipeline,
        result.X_holdout,
        result.y_holdout,
        task=result.task,
        classes=result.classes,
        metric=result.metric,
        cv_scores=cv_scores(result),
        context=CONTEXT,
        **extra,
    )


@pytest.mark.parametrize(
    ("frame", "target", "expected"),
    [
        (data.binary(), "label", {"roc", "pr", "confusion", "importance", "cv_scores"}),
        (data.multiclass(), "label", {"confusion", "importance", "cv_scores"}),
        (
            data.regression(),
            "y",
            {"pred_vs_actual", "residuals", "importance", "cv_scores"},
        ),
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_every_plot_of_the_task_is_a_legible_png(
    frame: pd.DataFrame, target: str, expected: set[str]
) -> None:
    result = train(frame, target, models=["lr", "dt"], folds=3)
    made = plot_all(result)
    assert made.failed == {}
    assert set(made.files) == {f"{name}.png" for name in expected}
    assert set(made.seconds) == set(made.files)
    for png in made.files.values():
        assert_legible_png(png)


def test_the_folds_and_the_holdout_are_kept_for_the_plots() -> None:
    result = train(data.binary(), "label", models=["lr", "dt"], folds=3, holdout=0.25)
    assert set(result.fold_scores) == {"lr", "dt", "blend"}  # the blend is scored per fold too
    for row in result.leaderboard:
        folds = [fold["AUC"] for fold in result.fold_scores[row["model"]]]
        assert len(folds) == 3 and np.isclose(np.mean(folds), row["AUC"])
    assert result.X_holdout is not None and result.y_holdout is not None
    assert len(result.X_holdout) == len(result.y_holdout) == 75
    assert list(result.X_holdout.columns) == ["x1", "x2", "age", "member", "color"]


def test_without_a_holdout_only_the_cv_plot_is_made() -> None:
    result = train(data.binary(), "label", models=["lr", "dt"], folds=3, holdout=0)
    made = plot_all(result)
    assert list(made.files) == ["cv_scores.png"] and made.failed == {}


def test_a_plot_that_cannot_be_made_is_skipped_and_the_others_are_made() -> None:
    """A holdout of one class: ROC and PR are undefined; the rest is still drawn."""
    result = train(data.binary(), "label", models=["lr"], folds=3)
    assert result.X_holdout is not None and result.y_holdout is not None
    one_class = result.y_holdout == "yes"
    made = training_plots(
        result.pipeline,
        result.X_holdout[one_class],
        result.y_holdout[one_class],
        task="classification",
        classes=result.classes,
        metric="AUC",
        cv_scores=cv_scores(result),
        context=CONTEXT,
    )
    assert set(made.failed) == {"roc.png", "pr.png"}
    assert "one class" in made.failed["roc.png"]
    assert {"confusion.png", "importance.png", "cv_scores.png"} <= set(made.files)


def test_should_stop_ends_plotting_between_plots() -> None:
    result = train(data.binary(), "label", models=["lr"], folds=3)
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    made = plot_all(result, should_stop=stop)
    assert list(made.files) == ["roc.png", "pr.png"]


def test_importance_is_per_raw_column_so_a_category_counts_once() -> None:
    """Importance is measured on the whole pipeline: `color` (one-hot or native inside) is one
    feature, and the strongest signal (2 * x1) comes out on top."""
    frame = data.binary(n=600)
    for model in ("lr", "hgb"):
        result = train(frame, "label", models=[model], folds=3)
        assert result.X_holdout is not None and result.y_holdout is not None
        found = permutation_importances(
            result.pipeline,
            result.X_holdout,
            result.y_holdout,
            task="classification",
            classes=result.classes,
            metric="AUC",
        )
        assert found.features == ["x1", "x2", "age", "member", "color"]
        assert found.features[int(np.argmax(found.means))] == "x1"
        assert found.scoring == "decrease in AUC" and found.repeats == plots.IMPORTANCE_REPEATS
        assert found.means[found.features.index("color")] > 0


def test_importance_work_is_bounded_on_a_wide_table() -> None:
    """150 features: one repeat over fewer rows, within the budget of predicted rows."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1700, 150)), columns=[f"f{i}" for i in range(150)])
    frame["y"] = 3 * frame["f7"] + rng.normal(scale=0.1, size=len(frame))
    result = train(frame, "y", models=["lr"], folds=2, holdout=0.3)
    assert result.X_holdout is not None and result.y_holdout is not None
    found = permutation_importances(
        result.pipeline,
        result.X_holdout,
        result.y_holdout,
        task="regression",
        classes=None,
        metric="MAE",
    )
    assert found.repeats == 1 and found.rows < plots.IMPORTANCE_ROWS
    assert 150 * found.repeats * found.rows <= plots.IMPORTANCE_BUDGET
    assert found.features[int(np.argmax(found.means))] == "f7"
    assert found.scoring == "increase in MAE"
    png = plots.importance_png(
        found.features, found.means, found.stds, found.scoring, title=CONTEXT.title("x")
    )
    assert_legible_png(png)


def test_importance_stops_repeating_past_its_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of time after the first repeat: one repeat is kept, the plot says so."""
    result = train(data.binary(), "label", models=["lr"], folds=3)
    assert result.X_holdout is not None and result.y_holdout is not None
    monkeypatch.setattr(plots, "IMPORTANCE_SECONDS", 0.0)
    found = permutation_importances(
        result.pipeline,
        result.X_holdout,
        result.y_holdout,
        task="classification",
        classes=result.classes,
        metric="AUC",
    )
    assert found.repeats == 1 and not found.stds.any() and found.means.any()


def test_a_metric_that_cannot_be_scored_falls_back() -> None:
    """RMSLE with negative targets is undefined: importance is measured with R² instead."""
    result = train(data.regression(), "y", models=["lr"], folds=3, metric="RMSLE")
    assert result.X_holdout is not None and result.y_holdout is not None
    assert (result.y_holdout < 0).any()
    found = permutation_importances(
        result.pipeline,
        result.X_holdout,
        result.y_holdout,
        task="regression",
        classes=None,
        metric="RMSLE",
    )
    assert found.scoring == "decrease in R²"


def test_boolean_labels_and_many_long_class_names() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(500) < 0.3
    scores = truth + rng.normal(scale=0.8, size=500)
    for make in (plots.roc_png, plots.pr_png):
        assert_legible_png(make(truth, scores, positive=True, title=CONTEXT.title("curve")))
    classes = [f"a rather long class name number {i:02d}" for i in range(40)]
    actual = rng.choice(classes, size=2000)
    predicted = np.where(rng.random(2000) < 0.6, actual, rng.choice(classes, size=2000))
    assert_legible_png(plots.confusion_png(actual, predicted, classes, title="many classes"))


def test_cv_plot_skips_missing_scores_and_refuses_none_at_all() -> None:
    png = plots.cv_scores_png(
        {"LightGBM": [0.8, 0.82, None], "Decision Tree": [0.7, 0.71, 0.69], "K Neighbors": []},
        metric="AUC",
        title=CONTEXT.title("cv"),
    )
    assert_legible_png(png)
    with pytest.raises(ValueError, match="no model has a AUC score"):
        plots.cv_scores_png({"lr": [None]}, metric="AUC", title="none")


def test_titles_name_the_model_version_and_the_dataset_version() -> None:
    title = PlotContext("churn", 3, spec("lr").label, "customers", 2).title("ROC curve")
    assert title.splitlines() == [
        "ROC curve",
        "churn v3 (Linear / Logistic Regression) · dataset customers v2",
    ]


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, submitter.ml.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_a_classifier_without_probabilities_gets_its_curves_from_the_margin() -> None:
    """Ridge and linear SVM have no `predict_proba`: ROC, PR and AUC importance use the
    decision function."""
    result = train(data.binary(), "label", models=["ridge", "svm"], folds=3)
    assert not hasattr(result.pipeline, "predict_proba")
    made = plot_all(result)
    assert made.failed == {}
    assert {"roc.png", "pr.png", "importance.png"} <= set(made.files)
