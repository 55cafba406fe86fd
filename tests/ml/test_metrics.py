"""`submitter.ml.metrics` computes AUC and the regression metrics itself (ranks and numpy,
no per-call input checks): they must equal scikit-learn's on the same inputs, including where
scikit-learn calls a metric undefined (a class absent) or special-cases it (a constant
target)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from submitter.ml import metrics


@pytest.mark.parametrize("n_classes", [3, 5, 10])
def test_multiclass_auc_is_scikit_learns_one_vs_rest_macro_auc(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    classes = list(range(n_classes))
    undefined = 0
    for _ in range(30):
        n = int(rng.integers(15, 400))
        y = rng.integers(0, n_classes, n)
        proba = rng.random((n, n_classes))
        proba[:, 0] = np.round(proba[:, 0], 1)  # ties, which ranks average
        proba /= proba.sum(axis=1, keepdims=True)
        ours = metrics._auc(y, proba, classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            try:
                theirs = skm.roc_auc_score(
                    y, proba, multi_class="ovr", average="macro", labels=classes
                )
            except ValueError:
                theirs = float("nan")
        if np.isnan(theirs):  # a class absent from y: NaN or an error, by release; ours None
            assert ours is None
            undefined += 1
            continue
        assert ours == pytest.approx(theirs, abs=1e-12)
    if n_classes == 10:
        assert undefined > 0  # small draws of ten classes miss one: that case was checked


def test_multiclass_auc_needs_probabilities() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[y] * 2.0  # sums to 2: not probabilities
    assert metrics._auc(y, scores, [0, 1, 2]) is None


@pytest.mark.parametrize("noise", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("constant", [False, True])
def test_regression_scores_are_scikit_learns(noise: float, constant: bool) -> None:
    rng = np.random.default_rng(int(noise * 10) + constant)
    y = np.full(50, 3.0) if constant else rng.normal(size=50)
    predicted = y + noise * rng.normal(size=50)
    scores = metrics.regression_scores(y, predicted)
    assert scores["MAE"] == pytest.approx(skm.mean_absolute_error(y, predicted), abs=1e-12)
    assert scores["MSE"] == pytest.approx(skm.mean_squared_error(y, predicted), abs=1e-12)
    assert scores["R2"] == pytest.approx(skm.r2_score(y, predicted), abs=1e-12)
