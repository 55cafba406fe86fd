"""A blend of the best compared models: a leaderboard candidate of its own.

Like PyCaret's `blend_models`, the blend averages its members: class probabilities (soft
voting) for classification, predictions for regression. Unlike it, the blend costs no fits
while models are compared: every (model, fold) fit already predicted its validation fold, so
the blend's score on fold k is the metric of its members' averaged out-of-fold predictions on
that fold, on exactly the folds every other candidate was scored on. Only when the blend
wins are its members refit, on the training part, like any winner.

Members are the top 2, 3 or 4 models by the ranking metric (among those with probabilities,
for classification), whichever of the three scores best: averaging a few strong models of
different kinds (a booster, a forest, a linear model) cancels part of each one's errors,
while adding weak ones dilutes the strong. Picking among three sizes on the same folds is a
selection like picking the best model, and no more optimistic than it.

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

SIZES = (2, 3, 4)
"""How many of the top models a blend may average."""


def label(members: Sequence[str]) -> str:
    return "Blend of " + " + ".join(members)


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
) -> list[dict[str, Any]]:
    """The blend's metrics on each fold, from its members' out-of-fold predictions."""
    scores = []
    for fold, (_, val_idx) in enumerate(splits):
        predictions = [oof[name][fold] for name in members]
        average = np.mean([p for p in predictions if p is not None], axis=0)
        y_val = y[val_idx]
        if task == "regression":
            scores.append(metrics.regression_scores(y_val, average))
        else:
            assert classes is not None
            predicted = np.asarray(classes, dtype=object)[np.argmax(average, axis=1)]
            predicted = predicted.astype(y_val.dtype) if y_val.dtype != object else predicted
            scores.append(metrics.scores_from_predictions(y_val, predicted, average, classes))
    return scores


def best(
    ranked: Sequence[str],
    oof: dict[str, list[np.ndarray | None]],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    task: str,
    classes: list[Any] | None,
    metric: str,
) -> tuple[list[str], list[dict[str, Any]]] | None:
    """The best-scoring blend of the top `SIZES` eligible models, and its per-fold scores;
    None with fewer than two eligible models."""
    eligible = candidates(ranked, oof)
    if len(eligible) < 2:
        return None
    key = metrics.sort_key(metric)
    options = []
    for size in sorted({min(s, len(eligible)) for s in SIZES}):
        members = eligible[:size]
        per_fold = fold_scores(members, oof, y, splits, task, classes)
        summary = metrics.summarise(per_fold, (metric,))
        options.append((key(summary), size, members, per_fold))
    options.sort(key=lambda option: (option[0], option[1]))  # ties: the smaller blend
    _, _, members, per_fold = options[0]
    return list(members), per_fold


def assemble(fitted: Sequence[tuple[str, Pipeline]], task: str, y: np.ndarray) -> Pipeline:
    """The blend of already fitted member pipelines, as a one-step Pipeline.

    The members were fitted one by one (each with its own fit keyword arguments, e.g.
    LightGBM's categorical columns, which a Voting estimator's `fit` cannot route), so the
    voting estimator gets the attributes its `fit` would have set: `estimators_`, and for a
    classifier the label encoder of `y` (the members predict probabilities in the order of
    its sorted classes, as `predict` expects)."""
    estimators = [(name, pipeline) for name, pipeline in fitted]
    voting: VotingClassifier | VotingRegressor
    if task == "regression":
        voting = VotingRegressor(estimators)
    else:
        voting = VotingClassifier(estimators, voting="soft")
        voting.le_ = LabelEncoder().fit(y)
        voting.classes_ = voting.le_.classes_
    voting.estimators_ = [pipeline for _, pipeline in fitted]
    return Pipeline([("model", voting)])
