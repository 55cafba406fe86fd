"""The catalogue of candidate models, by PyCaret-style short name.

Each entry says how to build the estimator for a task and which preprocessing it needs
(`pipeline.build_pipeline` acts on that). Hyperparameters are tuned to be strong *and* cheap on
tables of 1k-100k rows, and scale with the number of training rows where a fixed value would
be wrong at one end: a minimum leaf size that regularises 20,000 rows starves 300.

Every estimator is single-threaded (`n_jobs=1`): training runs folds in parallel threads
instead, which measured 3-8x faster than OpenMP-threaded boosters on a busy 2-core machine,
where OpenMP threads spin waiting for each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    BayesianRidge,
    ElasticNetCV,
    LinearRegression,
    LogisticRegression,
    RidgeClassifier,
    RidgeCV,
)
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.svm import LinearSVC, LinearSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

Prep = Literal["scaled", "onehot", "native"]
"""scaled: impute + standardise + one-hot (distance/gradient-based models); onehot: impute +
one-hot (sklearn trees); native: NaN and categories handled by the model (boosters)."""

Build = Callable[[str, int, int, int], Any]
"""(task, n_rows, seed, n_classes) -> an unfitted estimator; n_classes is 2 for regression."""
Task = Literal["classification", "regression"]
BOTH: tuple[Task, ...] = ("classification", "regression")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    prep: Prep
    build: Build
    tasks: tuple[Task, ...] = BOTH
    """The tasks the model exists for (LDA/QDA/naive Bayes classify; the regularised linear
    regressions regress)."""


def _leaf(n_rows: int, per: int, low: int, high: int) -> int:
    """A minimum leaf size of about one leaf per `per` rows, clipped to [low, high]."""
    return int(min(high, max(low, n_rows // per)))


def _classifier(task: str) -> bool:
    return task == "classification"


def _lr(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    return LogisticRegression(max_iter=2000) if _classifier(task) else LinearRegression()


def _ridge(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # Regression: the penalty chosen by efficient leave-one-out over a wide grid, so no
    # single alpha has to suit every table.
    return RidgeClassifier() if _classifier(task) else RidgeCV(alphas=np.logspace(-3, 3, 13))


def _lda(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # Ledoit-Wolf shrinkage of the shared covariance: stable with many or collinear
    # (one-hot) columns and few rows per class, where the plain estimate is singular.
    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


def _qda(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # One covariance per class, shrunk a little towards the identity (the features are
    # standardised) so a class with few rows or a constant one-hot column stays invertible.
    return QuadraticDiscriminantAnalysis(reg_param=0.1)


def _nb(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    return GaussianNB()


def _br(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    return BayesianRidge()


def _en(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # Lasso to ridge-like mixes, the penalty picked by an inner 3-fold CV on the fold's rows.
    # A grid of 3 mixes x 30 penalties scored as 4 x 50 with inner 5-fold did (diabetes: R2
    # 0.4886 against 0.4874) at a third of the time (42 ms a fit against 122).
    return ElasticNetCV(l1_ratio=[0.1, 0.5, 1.0], alphas=30, cv=3, max_iter=5000)


def _knn(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    k = min(15, max(1, n_rows // 10))
    cls = KNeighborsClassifier if _classifier(task) else KNeighborsRegressor
    return cls(n_neighbors=k, weights="distance", n_jobs=1)


def _svm(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # Linear: kernel SVMs are quadratic in rows and have no place in a fast default search.
    if _classifier(task):
        return LinearSVC(max_iter=5000, random_state=seed)
    return LinearSVR(max_iter=5000, random_state=seed)


def _dt(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    cls = DecisionTreeClassifier if _classifier(task) else DecisionTreeRegressor
    return cls(max_depth=8, min_samples_leaf=_leaf(n_rows, 500, 1, 50), random_state=seed)


def _rf(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    cls = RandomForestClassifier if _classifier(task) else RandomForestRegressor
    return cls(
        n_estimators=100,
        min_samples_leaf=_leaf(n_rows, 1000, 1, 20),
        max_features="sqrt" if _classifier(task) else 0.5,
        max_samples=0.5 if n_rows > 5000 else None,  # half the cost, no measurable AUC loss
        n_jobs=1,
        random_state=seed,
    )


def _et(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    cls = ExtraTreesClassifier if _classifier(task) else ExtraTreesRegressor
    return cls(
        n_estimators=80,
        min_samples_leaf=_leaf(n_rows, 2000, 1, 20),
        max_features="sqrt" if _classifier(task) else 0.5,
        n_jobs=1,
        random_state=seed,
    )


def _hgb(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    # Half the default rate with more rounds, smaller leaves, fewer bins and feature
    # subsampling: +0.006 AUC on the credit table and faster. Early stopping (on 10% of the
    # rows, after 20 rounds without gain) from 10k rows, like scikit-learn's "auto"; below
    # that a fixed 200 rounds, as each round costs milliseconds of overhead however few rows.
    large = n_rows > 10_000
    cls = HistGradientBoostingClassifier if _classifier(task) else HistGradientBoostingRegressor
    return cls(
        learning_rate=0.05,
        max_iter=400 if large else 200,
        max_leaf_nodes=15,
        min_samples_leaf=_leaf(n_rows, 200, 5, 100),
        l2_regularization=1.0,
        max_features=0.5,
        max_bins=63,
        early_stopping=large,
        n_iter_no_change=20,
        random_state=seed,
    )


LIGHTGBM_TREES = 300
"""Boosting rounds of LightGBM for a regression or a binary target (one tree a round)."""


def _lightgbm(task: str, n_rows: int, seed: int, n_classes: int = 2) -> Any:
    import lightgbm

    cls = lightgbm.LGBMClassifier if _classifier(task) else lightgbm.LGBMRegressor
    # A K-class target grows K trees a round: fewer, proportionally larger steps keep the
    # number of trees (and the time) at most twice the binary case's, at a rate still
    # well below LightGBM's default 0.1 (digits: 3x faster, accuracy unchanged).
    rounds = LIGHTGBM_TREES if n_classes <= 2 else max(100, 2 * LIGHTGBM_TREES // n_classes)
    return cls(
        n_estimators=rounds,
        learning_rate=0.03 * LIGHTGBM_TREES / rounds,
        num_leaves=15,
        min_child_samples=_leaf(n_rows, 200, 5, 100),
        colsample_bytree=0.5,
        subsample=0.8,
        subsample_freq=1,
        reg_lambda=5.0,
        max_bin=63,
        n_jobs=1,
        verbose=-1,
        random_state=seed,
    )


def _lightgbm_works() -> bool:
    try:
        import lightgbm  # noqa: F401
    except Exception:  # not installed, or its native library does not load (no libgomp)
        return False
    return True


HAS_LIGHTGBM = _lightgbm_works()

CLASSIFICATION: tuple[Task, ...] = ("classification",)
REGRESSION: tuple[Task, ...] = ("regression",)

CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("lr", "Linear / Logistic Regression", "scaled", _lr),
        ModelSpec("ridge", "Ridge", "scaled", _ridge),
        ModelSpec("lda", "Linear Discriminant Analysis", "scaled", _lda, CLASSIFICATION),
        ModelSpec("qda", "Quadratic Discriminant Analysis", "scaled", _qda, CLASSIFICATION),
        ModelSpec("nb", "Naive Bayes", "scaled", _nb, CLASSIFICATION),
        ModelSpec("br", "Bayesian Ridge", "scaled", _br, REGRESSION),
        ModelSpec("en", "Elastic Net", "scaled", _en, REGRESSION),
        ModelSpec("knn", "K Neighbors", "scaled", _knn),
        ModelSpec("svm", "Linear SVM", "scaled", _svm),
        ModelSpec("dt", "Decision Tree", "onehot", _dt),
        ModelSpec("rf", "Random Forest", "onehot", _rf),
        ModelSpec("et", "Extra Trees", "onehot", _et),
        ModelSpec("hgb", "Histogram Gradient Boosting", "native", _hgb),
        *([ModelSpec("lightgbm", "LightGBM", "native", _lightgbm)] if HAS_LIGHTGBM else []),
    ]
}

SMALL_ROWS = 10_000
"""Up to this many rows kNN (whose prediction cost grows with rows x rows) is in the default
set."""

DEFAULT_MODELS: tuple[str, ...] = (
    "lr",
    "ridge",
    "lda",
    "qda",
    "nb",
    "br",
    "en",
    "knn",
    "dt",
    "et",
    "lightgbm" if HAS_LIGHTGBM else "hgb",
)
"""Every model the default set may hold; `default_models` picks per task and size. Cheap
linear and generative models (closed form or a few passes: milliseconds to a second) win
small or near-linear tables and give a blend a model unlike the trees; a forest and a
booster win the rest. One histogram booster: HGB and LightGBM grow the same kind of trees
from the same binned columns. Below 10,000 rows HGB's fixed rounds cost more than LightGBM's
whole fit and added nothing LightGBM lacked; on credit (24,000 rows) it was neither the
winner nor in the blend and took a fifth of the wall (8.0 s with it, 6.1 s without, the
same blend). It stands in where LightGBM is not installed. rf and svm are available by name:
slower than et and weaker than lr on every table tried."""


def default_models(task: str, n_rows: int) -> list[str]:
    """The default candidates for `task` on `n_rows` training rows (see `SMALL_ROWS`)."""
    names = [n for n in DEFAULT_MODELS if task in CATALOGUE[n].tasks]
    if n_rows > SMALL_ROWS:
        names.remove("knn")
    return names


def supports(name: str, task: str) -> bool:
    return task in spec(name).tasks


def available_models() -> list[str]:
    """Names `train(models=...)` accepts on this installation."""
    return list(CATALOGUE)


def spec(name: str) -> ModelSpec:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {available_models()}") from None
