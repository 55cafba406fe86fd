"""A blend of the best compared models: a leaderboard candidate of its own.

Like PyCaret's `blend_models`, the blend averages its members: class probabilities (soft
voting) for classification, predictions for regression. Unlike it, the blend costs no fits
while models are compared: every (model, fold) fit already predicted its validation fold, so
the blend's score on fold k is the metric of its members' averaged out-of-fold predictions on
that fold, on exactly the folds every other candidate was scored on. Only when the blend
wins are its members refit, on the training part, like any winner.

Members are chosen by greedy ensemble selection (Caruana et al., 2004, as auto-sklearn and
AutoGluon do): start from the best model, add a second one (the one whose average with it
scores best), then keep adding whichever model (again, if it helps: with replacement, so
repeats are weights) most improves the averaged out-of-fold metric, while it improves, at
most `STEPS` members, from the `POOL` best models. Averaging a few strong models of
different kinds (a booster, a forest, a linear model) cancels part of each one's errors; the
greedy stop keeps weak ones from diluting the strong. Choosing members on the folds they are
scored on is a selection like picking the best model, and the pool and steps are small.

The fitted blend is a `VotingClassifier` / `VotingRegressor` of whole pipelines (each member
keeps its own preprocessing) inside a one-step Pipeline, so it saves and loads with skops
like any other model and predicts from raw rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import VotingClassifier, VotingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from submitter.ml import metrics

NAME = "blend"
"""The blend's name on the leaderboard (never a catalogue model, so `models=` cannot ask
for it; `blend=False` leaves it out)."""

POOL = 6
"""The best models (by the ranking metric) a blend may draw on."""
STEPS = 10
"""At most this many draws (a model drawn k times has weight k)."""


def label(members: Sequence[str], weights: Sequence[int] | None = None) -> str:
    if weights is None or all(w == 1 for w in weights):
        return "Blend of " + " + ".join(members)
    return "Blend of " + " + ".join(
        f"{w} x {name}" if w > 1 else name for name, w in zip(members, weights, strict=True)
    )


def candidates(ranked: Sequence[str], oof: dict[str, list[np.ndarray | None]]) -> list[str]:
    """The models a blend may use, best first: those with an out-of-fold prediction on every
    fold (classifiers without `predict_proba` have none)."""
    return [name for name in ranked if oof.get(name) and all(p is not None for p in oof[name])]


def fold_scores(
    members: Sequence[str],
    oof: dict[str, list[np.ndarray | None]],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    task: str,
    classes: list[Any] | None,
    weights: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The blend's metrics on each fold, from its members' out-of-fold predictions."""
    scores = []
    for fold, (_, val_idx) in enumerate(splits):
        average = _average(members, weights, oof, fold)
        y_val = y[val_idx]
        if task == "regression":
            scores.append(metrics.regression_scores(y_val, average))
        else:
            assert classes is not None
            predicted = _labels(average, classes, y_val)
            scores.append(metrics.scores_from_predictions(y_val, predicted, average, classes))
    return scores


def _average(
    members: Sequence[str],
    weights: Sequence[int] | None,
    oof: dict[str, list[np.ndarray | None]],
    fold: int,
) -> np.ndarray:
    predictions = [oof[name][fold] for name in members]
    return np.average(np.stack([p for p in predictions if p is not None]), axis=0, weights=weights)


def _labels(average: np.ndarray, classes: list[Any], y_val: np.ndarray) -> np.ndarray:
    predicted = np.asarray(classes, dtype=object)[np.argmax(average, axis=1)]
    return predicted.astype(y_val.dtype) if y_val.dtype != object else predicted


def _fold_value(
    metric: str, average: np.ndarray, y_val: np.ndarray, task: str, classes: list[Any] | None
) -> float | None:
    """The ranking metric alone on one fold (the selection evaluates it many times)."""
    if task == "regression":
        return metrics.regression_scores(y_val, average)[metric]
    assert classes is not None
    if metric == "AUC" and len(classes) == 2:
        return metrics.binary_auc(y_val == classes[1], average[:, 1])
    predicted = _labels(average, classes, y_val)
    return metrics.scores_from_predictions(y_val, predicted, average, classes)[metric]


def best(
    ranked: Sequence[str],
    oof: dict[str, list[np.ndarray | None]],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    task: str,
    classes: list[Any] | None,
    metric: str,
) -> tuple[list[str], list[int], list[dict[str, Any]]] | None:
    """The selected blend: its members (heaviest first), their weights and its per-fold
    scores; None with fewer than two eligible models."""
    pool = candidates(ranked, oof)[:POOL]
    if len(pool) < 2:
        return None
    key = metrics.sort_key(metric)
    y_vals = [y[val_idx] for _, val_idx in splits]
    sums = [np.asarray(oof[pool[0]][f], dtype="float64") for f in range(len(splits))]
    counts = {pool[0]: 1}
    current: Any = None
    for step in range(1, STEPS):
        options = []
        for name in pool[1:] if step == 1 else pool:  # the second draw is another model
            values = [
                _fold_value(metric, (sums[f] + oof[name][f]) / (step + 1), y_vals[f], task, classes)  # type: ignore[operator]
                for f in range(len(splits))
            ]
            defined = [v for v in values if v is not None]
            summary = {metric: float(np.mean(defined)) if defined else None}
            options.append((key(summary), pool.index(name), name))
        score, _, name = min(options)
        if step > 1 and not score < current:
            break
        current = score
        counts[name] = counts.get(name, 0) + 1
        sums = [sums[f] + oof[name][f] for f in range(len(splits))]  # type: ignore[operator]
    members = sorted(counts, key=lambda n: (-counts[n], pool.index(n)))
    weights = [counts[n] for n in members]
    return members, weights, fold_scores(members, oof, y, splits, task, classes, weights)


def assemble(
    fitted: Sequence[tuple[str, Pipeline]],
    task: str,
    y: np.ndarray,
    weights: Sequence[int] | None = None,
) -> Pipeline:
    """The blend of already fitted member pipelines, as a one-step Pipeline.

    The members were fitted one by one (each with its own fit keyword arguments, e.g.
    LightGBM's categorical columns, which a Voting estimator's `fit` cannot route), so the
    voting estimator gets the attributes its `fit` would have set: `estimators_`, and for a
    classifier the label encoder of `y` (the members predict probabilities in the order of
    its sorted classes, as `predict` expects)."""
    estimators = [(name, pipeline) for name, pipeline in fitted]
    voting: VotingClassifier | VotingRegressor
    w = None if weights is None else list(weights)
    if task == "regression":
        voting = VotingRegressor(estimators, weights=w)
    else:
        voting = VotingClassifier(estimators, voting="soft", weights=w)
        voting.le_ = LabelEncoder().fit(y)
        voting.classes_ = voting.le_.classes_
    voting.estimators_ = [pipeline for _, pipeline in fitted]
    return Pipeline([("model", voting)])
