"""The metric sets a leaderboard reports, and how one fitted model is scored on one split.

Names follow PyCaret's so users coming from it recognise the table. A metric that is not
defined for a split (AUC without probabilities or with a class absent, RMSLE with negative
targets) is None rather than an exception or a misleading number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

CLASSIFICATION_METRICS = ("Accuracy", "AUC", "Recall", "Precision", "F1", "Kappa", "MCC")
REGRESSION_METRICS = ("MAE", "MSE", "RMSE", "R2", "RMSLE", "MAPE")
LOWER_IS_BETTER = frozenset({"MAE", "MSE", "RMSE", "RMSLE", "MAPE"})


def metric_names(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def default_metric(task: str, n_classes: int) -> str:
    """AUC for binary (threshold-free, robust to imbalance), Accuracy for multiclass, R2."""
    if task == "regression":
        return "R2"
    return "AUC" if n_classes == 2 else "Accuracy"


def resolve_metric(task: str, metric: str | None, n_classes: int) -> str:
    """The canonical spelling of `metric` (case-insensitive), or the task's default."""
    if metric is None:
        return default_metric(task, n_classes)
    for name in metric_names(task):
        if name.lower() == metric.lower():
            return name
    raise ValueError(f"unknown {task} metric {metric!r}; choose from {list(metric_names(task))}")


def score(model: Any, X: Any, y: np.ndarray, task: str, classes: list[Any] | None) -> dict:
    """Every metric of the task for a fitted model on (X, y)."""
    if task == "regression":
        return regression_scores(y, np.asarray(model.predict(X), dtype="float64"))
    assert classes is not None
    return classification_scores(model, X, y, classes)


def classification_scores(
    model: Any, X: Any, y: np.ndarray, classes: list[Any], *, proba: np.ndarray | None = None
) -> dict:
    """Binary: Recall/Precision/F1 of the positive class (the last of the sorted classes);
    multiclass: their macro averages and one-vs-rest macro AUC. `proba`: the model's
    `probabilities` on X when the caller has them already (they are not computed twice)."""
    ranking = proba if proba is not None else _ranking(model, X, classes)
    return scores_from_predictions(y, model.predict(X), ranking, classes)


def scores_from_predictions(
    y: np.ndarray, predicted: Any, ranking: np.ndarray | None, classes: list[Any]
) -> dict:
    """`classification_scores` from predictions already made: labels, and `ranking` (the
    probabilities, one column per class in `classes` order, or a binary decision function;
    None: no AUC). A blend is scored this way from its members' out-of-fold probabilities."""
    matrix = confusion(y, predicted, classes)
    return {"Accuracy": _accuracy(matrix), "AUC": _auc(y, ranking, classes), **_rates(matrix)}


def confusion(y: np.ndarray, predicted: Any, classes: list[Any]) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted) in `classes` order.

    Every label metric is read off it with a few numpy operations: scikit-learn's metric
    functions re-validate and re-encode the labels on each call, ~30 ms per model and
    fold for the seven metrics, which on small tables cost more than the fits."""
    k = len(classes)
    truth = pd.Categorical(np.asarray(y, dtype=object), categories=classes).codes
    guess = pd.Categorical(np.asarray(predicted, dtype=object), categories=classes).codes
    if (truth < 0).any() or (guess < 0).any():
        raise ValueError("a label outside the classes")
    return np.bincount(truth * k + guess, minlength=k * k).reshape(k, k).astype("float64")


def _accuracy(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / matrix.sum())


def _rates(matrix: np.ndarray) -> dict[str, float | None]:
    """Recall, Precision, F1 (binary: of the positive class, the last; multiclass: macro
    over the classes present in the truth or the predictions, as scikit-learn averages),
    Cohen's kappa and MCC; an undefined ratio (0/0) is 0, as `zero_division=0`."""
    diagonal, truth, guess = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    n = matrix.sum()

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    recall, precision = ratio(diagonal, truth), ratio(diagonal, guess)
    f1 = ratio(2 * diagonal, truth + guess)
    if len(matrix) == 2:
        rates = {"Recall": recall[1], "Precision": precision[1], "F1": f1[1]}
    else:
        present = (truth + guess) > 0
        rates = {
            "Recall": recall[present].mean(),
            "Precision": precision[present].mean(),
            "F1": f1[present].mean(),
        }
    expected = float(truth @ guess) / n**2
    observed = float(np.trace(matrix)) / n
    kappa = None if expected == 1 else (observed - expected) / (1 - expected)
    covariance = float(np.trace(matrix)) * n - float(truth @ guess)
    spread = (n**2 - float(guess @ guess)) * (n**2 - float(truth @ truth))
    mcc = 0.0 if spread == 0 else covariance / math.sqrt(spread)
    return {
        **{name: float(value) for name, value in rates.items()},
        "Kappa": _finite(kappa) if kappa is not None else None,
        "MCC": _finite(mcc),
    }


def probabilities(model: Any, X: Any, classes: list[Any]) -> np.ndarray | None:
    """`predict_proba` with one column per class of `classes`, in that order (a class the
    model never saw in its fit gets zeros), or None for a model without probabilities."""
    if not hasattr(model, "predict_proba"):
        return None
    proba = np.asarray(model.predict_proba(X), dtype="float64")
    fitted = list(model.classes_)
    if fitted == list(classes):
        return proba
    out = np.zeros((proba.shape[0], len(classes)))
    for j, value in enumerate(fitted):
        out[:, list(classes).index(value)] = proba[:, j]
    return out


def _ranking(model: Any, X: Any, classes: list[Any]) -> np.ndarray | None:
    proba = probabilities(model, X, classes)
    if proba is not None:
        return proba
    if len(classes) == 2 and hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype="float64")
    return None


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC from ranks (the Mann-Whitney statistic, ties averaged): what
    `roc_auc_score` returns, without its input checks; None when a class is absent."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc(y: np.ndarray, ranking: np.ndarray | None, classes: list[Any]) -> float | None:
    """Binary AUC, or the one-vs-rest macro AUC of `roc_auc_score(multi_class="ovr")`
    (each class's binary AUC, averaged) computed from ranks: scikit-learn's version
    re-validated its inputs per class, ~10 ms a call, and a blend's selection calls it
    hundreds of times. None where AUC is undefined (a class absent from the split; scores
    that are not probabilities summing to 1 over the classes)."""
    if ranking is None:
        return None
    y = np.asarray(y)
    if len(classes) == 2:
        scores = ranking[:, 1] if ranking.ndim == 2 else ranking
        return binary_auc(y == classes[1], scores)
    if ranking.ndim != 2 or not np.allclose(ranking.sum(axis=1), 1.0):
        return None
    per_class = []
    for j, value in enumerate(classes):
        auc = binary_auc(y == value, ranking[:, j])
        if auc is None:
            return None
        per_class.append(auc)
    return float(np.mean(per_class))


def regression_scores(y: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSLE is None with negative targets and clips negative predictions to 0; MAPE skips
    rows whose target is 0 (it would divide by zero) and is None if all are."""
    y = np.asarray(y, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    # numpy, not sklearn.metrics: the same formulas without input checks per call (a
    # blend's selection scores hundreds of averages).
    error = y - predicted
    mse = float(np.mean(error**2))
    rmsle = None
    if not (y < 0).any():
        log_error = np.log1p(np.clip(predicted, 0, None)) - np.log1p(y)
        rmsle = float(np.sqrt(np.mean(log_error**2)))
    nonzero = y != 0
    mape = None
    if nonzero.any():
        mape = float(np.mean(np.abs((y[nonzero] - predicted[nonzero]) / y[nonzero])))
    return {
        "MAE": float(np.mean(np.abs(error))),
        "MSE": mse,
        "RMSE": math.sqrt(mse),
        "R2": _r2(y, error) if len(y) > 1 else None,
        "RMSLE": rmsle,
        "MAPE": mape,
    }


def _r2(y: np.ndarray, error: np.ndarray) -> float | None:
    """`r2_score`: 1 - SS_res / SS_tot; with a constant target 1.0 for a perfect fit, else
    0.0 (its `force_finite`)."""
    residual = float(np.sum(error**2))
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return _finite(1.0 - residual / total)


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def summarise(per_fold: list[dict], names: tuple[str, ...]) -> dict[str, float | None]:
    """Mean and (population) std of each metric over the folds where it was defined."""
    out: dict[str, float | None] = {}
    for name in names:
        values = [f[name] for f in per_fold if f.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
        out[f"{name}_std"] = float(np.std(values)) if values else None
    return out


def sort_key(metric: str) -> Any:
    """Key for sorting leaderboard rows best first; rows without the metric go last."""

    def key(row: dict) -> tuple[bool, float]:
        value = row.get(metric)
        if value is None:
            return (True, 0.0)
        return (False, value if metric in LOWER_IS_BETTER else -value)

    return key
