"""The metric sets a leaderboard reports, and how one fitted model is scored on one split.

Names follow PyCaret's so users coming from it recognise the table. A metric that is not
defined for a split (AUC without probabilities or with a class absent, RMSLE with negative
targets) is None rather than an exception or a misleading number.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn import metrics as skm

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


def classification_scores(model: Any, X: Any, y: np.ndarray, classes: list[Any]) -> dict:
    """Binary: Recall/Precision/F1 of the positive class (the last of the sorted classes);
    multiclass: their macro averages and one-vs-rest macro AUC."""
    predicted = model.predict(X)
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos_label = classes[1] if binary else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision etc. on tiny folds: scored 0
        return {
            "Accuracy": float(skm.accuracy_score(y, predicted)),
            "AUC": _auc(model, X, y, classes),
            "Recall": float(
                skm.recall_score(
                    y, predicted, average=average, pos_label=pos_label, zero_division=0
                )
            ),
            "Precision": float(
                skm.precision_score(
                    y, predicted, average=average, pos_label=pos_label, zero_division=0
                )
            ),
            "F1": float(
                skm.f1_score(y, predicted, average=average, pos_label=pos_label, zero_division=0)
            ),
            "Kappa": _finite(skm.cohen_kappa_score(y, predicted)),
            "MCC": _finite(skm.matthews_corrcoef(y, predicted)),
        }


def _auc(model: Any, X: Any, y: np.ndarray, classes: list[Any]) -> float | None:
    fitted = list(model.classes_)
    try:
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
            if len(classes) == 2:
                return float(skm.roc_auc_score(y == classes[1], proba[:, fitted.index(classes[1])]))
            return float(
                skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=fitted)
            )
        if len(classes) == 2 and hasattr(model, "decision_function"):
            return float(skm.roc_auc_score(y == classes[1], model.decision_function(X)))
    except ValueError:
        pass  # a class missing from this split: AUC is undefined
    return None


def regression_scores(y: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSLE is None with negative targets and clips negative predictions to 0; MAPE skips
    rows whose target is 0 (it would divide by zero) and is None if all are."""
    y = np.asarray(y, dtype="float64")
    mse = float(skm.mean_squared_error(y, predicted))
    rmsle = None
    if not (y < 0).any():
        log_error = np.log1p(np.clip(predicted, 0, None)) - np.log1p(y)
        rmsle = float(np.sqrt(np.mean(log_error**2)))
    nonzero = y != 0
    mape = None
    if nonzero.any():
        mape = float(np.mean(np.abs((y[nonzero] - predicted[nonzero]) / y[nonzero])))
    return {
        "MAE": float(skm.mean_absolute_error(y, predicted)),
        "MSE": mse,
        "RMSE": math.sqrt(mse),
        "R2": _finite(skm.r2_score(y, predicted)) if len(y) > 1 else None,
        "RMSLE": rmsle,
        "MAPE": mape,
    }


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
