"""Compare candidate models by cross-validation, refit the best and score it on a holdout.

The flow is PyCaret's `compare_models` without its global state: a holdout split (stratified
for classification), k-fold CV of every candidate on the rest, a leaderboard of the mean and
std of every metric, then the winner refit on the whole training part and scored once on the
holdout, which no model selection has seen.

(model, fold) fits run in a small thread pool with single-threaded estimators: the heavy parts
of scikit-learn and LightGBM release the GIL, folds need no synchronisation, and threads work
inside Celery's daemonic prefork children, where joblib's process pools fall back to serial.
Between fits the caller's `should_stop` is polled (cancellation) and the time budget checked;
a fit already running is allowed to finish, so a stop takes at most one fold's fit to land.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from joblib import cpu_count
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController, threadpool_limits

from submitter.ml import blend as blending
from submitter.ml import metrics
from submitter.ml.features import Schema, feature_schema, model_frame
from submitter.ml.models import default_models, spec
from submitter.ml.pipeline import build_pipeline

MAX_CLASSES_FOR_INTEGER_TARGET = 20
"""task="auto": an integer target with at most this many distinct values is a class label."""

ProgressCallback = Callable[[int, int, str, int], None]


class TrainingStopped(Exception):
    """`should_stop()` returned True; the job kind turns this into a cancelled job."""


@dataclass
class TrainResult:
    """Everything a training job records: the leaderboard, the winner and its fitted pipeline.

    `leaderboard` rows hold `model`, `label`, each metric and `<metric>_std` over the folds,
    `fit_seconds` (mean per fold) and `folds`, best first. `params` are the winning
    estimator's hyperparameters; `settings` the run's facts (rows, split sizes, the task rule,
    the positive class, timings). `skipped` lists candidates the time budget cut, `failed`
    those whose fit raised (with the error).

    `fold_scores` keeps every compared model's per-fold metrics (the leaderboard has only
    their mean and std), and `X_holdout`/`y_holdout` the rows no model selection saw (empty
    with `holdout=0`): the plots of the training job are drawn from them.
    """

    task: str
    metric: str
    leaderboard: list[dict[str, Any]]
    best_model: str
    holdout_metrics: dict[str, float | None]
    pipeline: Pipeline
    feature_schema: Schema
    classes: list[Any] | None
    params: dict[str, Any]
    skipped: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fold_scores: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    X_holdout: pd.DataFrame | None = None
    y_holdout: np.ndarray | None = None


def train(
    data: pa.Table | pd.DataFrame,
    target: str,
    *,
    task: str = "auto",
    models: Sequence[str] | None = None,
    folds: int = 5,
    metric: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    time_budget_seconds: float | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    n_jobs: int | None = None,
    blend: bool = True,
) -> TrainResult:
    """Train and compare `models` on `data` to predict `target`; by default the task's
    `default_models` (a named model of the other task only, such as `lda` in a regression,
    is left out and listed in `settings["models_not_for_task"]`).

    `task="auto"` picks classification for a string or boolean target, or a whole-number one
    with at most 20 distinct values, else regression. Rows whose target is null are dropped.
    `metric` ranks the leaderboard (default AUC for binary, Accuracy for multiclass, R2).
    `holdout=0` skips the holdout (the winner is then refit on all rows and
    `holdout_metrics` is empty). `on_progress(done, total, model, fold)` is called after each
    (model, fold) with 1-based fold numbers; `should_stop()` between fits raises
    `TrainingStopped`. Once `time_budget_seconds` of CV have passed no further fits start, but
    the first model to complete is always awaited; unfinished candidates land in `skipped`.
    `n_jobs` folds are fitted in parallel (default: the usable CPUs, cgroup quotas included,
    at most `folds`). `blend` adds the average of the best models (`submitter.ml.blend`) to
    the leaderboard, scored from their out-of-fold predictions on the same folds.
    """
    started = time.monotonic()
    if folds < 2:
        raise ValueError("folds must be at least 2")
    if not 0 <= holdout < 1:
        raise ValueError("holdout must be in [0, 1)")
    frame = data.to_pandas() if isinstance(data, pa.Table) else data
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the data")
    keep = frame[target].notna().to_numpy()
    schema = feature_schema(data, target)
    if not schema:
        raise ValueError("the data has no feature columns besides the target")
    X = model_frame(frame.loc[keep], schema).reset_index(drop=True)
    labels = frame.loc[keep, target].reset_index(drop=True)
    task, rule = resolve_task(task, labels)
    y, classes = _target(labels, task)
    metric = metrics.resolve_metric(task, metric, len(classes or []))

    train_idx, hold_idx, splits = split_rows(y, task, folds=folds, holdout=holdout, seed=seed)
    X_train, y_train = X.iloc[train_idx].reset_index(drop=True), y[train_idx]
    names, not_for_task = _candidates(models, task, len(y_train))
    n_classes = len(classes or [])

    search = _Search(
        schema, task, classes, X_train, y_train, splits, seed, n_classes,
        workers=max(1, min(n_jobs or cpu_count(), folds)),
        budget=time_budget_seconds, on_progress=on_progress, should_stop=should_stop,
    )  # fmt: skip
    search.run(names)
    cv_seconds = time.monotonic() - started

    names_done = [n for n in names if n in search.complete]
    leaderboard = sorted((search.row(n) for n in names_done), key=metrics.sort_key(metric))
    fold_scores = {n: list(search.fold_scores[n]) for n in names_done}
    members: list[str] = []
    weights: list[int] = []
    if blend:
        found = blending.best(
            [row["model"] for row in leaderboard], search.oof, y_train, splits, task, classes,
            metric,
        )  # fmt: skip
        if found is not None:
            members, weights, fold_scores[blending.NAME] = found
            leaderboard.append(
                {
                    "model": blending.NAME,
                    "label": blending.label(members, weights),
                    **metrics.summarise(fold_scores[blending.NAME], metrics.metric_names(task)),
                    "fit_seconds": round(sum(search.row(n)["fit_seconds"] for n in members), 4),
                    "folds": len(splits),
                }
            )
            leaderboard.sort(key=metrics.sort_key(metric))
    best = leaderboard[0]["model"]
    if should_stop is not None and should_stop():
        raise TrainingStopped()

    refit_started = time.monotonic()
    winners = members if best == blending.NAME else [best]
    fitted = _refit(schema, winners, task, X_train, y_train, seed, n_classes, search.workers)
    if best == blending.NAME:
        pipeline = blending.assemble(
            list(zip(winners, fitted, strict=True)), task, y_train, weights
        )
        params: dict[str, Any] = {"members": members, "weights": weights, "voting": "average"}
    else:
        pipeline = fitted[0]
        params = _json_safe(pipeline.named_steps["model"].get_params(deep=False))
    refit_seconds = time.monotonic() - refit_started
    holdout_metrics: dict[str, float | None] = {}
    if len(hold_idx):
        holdout_metrics = metrics.score(pipeline, X.iloc[hold_idx], y[hold_idx], task, classes)

    return TrainResult(
        task=task,
        metric=metric,
        leaderboard=leaderboard,
        best_model=best,
        holdout_metrics=holdout_metrics,
        pipeline=pipeline,
        feature_schema=schema,
        classes=classes,
        params=params,
        skipped=[n for n in names if n not in search.complete and n not in search.failed],
        failed=dict(search.failed),
        settings={
            "target": target,
            "task_rule": rule,
            "models": names,
            "models_not_for_task": not_for_task,
            "blend": members,
            "blend_weights": weights,
            "rows": len(frame),
            "rows_dropped_null_target": int((~keep).sum()),
            "rows_train": len(train_idx),
            "rows_holdout": len(hold_idx),
            "folds": folds,
            "holdout": holdout,
            "seed": seed,
            "positive_class": classes[1] if classes and len(classes) == 2 else None,
            "time_budget_seconds": time_budget_seconds,
            "cv_seconds": round(cv_seconds, 3),
            "refit_seconds": round(refit_seconds, 3),
        },
        fold_scores=fold_scores,
        X_holdout=X.iloc[hold_idx].reset_index(drop=True),
        y_holdout=y[hold_idx],
    )


def split_rows(
    y: np.ndarray, task: str, *, folds: int = 5, holdout: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The rows `train` cross-validates on, its holdout rows, and the folds (positions in the
    training rows): a stratified split for classification. Public so that a comparison with
    another tool (bench/train_suite.py) can give it exactly the same folds."""
    stratify = y if task == "classification" else None
    if holdout > 0:
        train_idx, hold_idx = train_test_split(
            np.arange(len(y)), test_size=holdout, stratify=stratify, random_state=seed
        )
    else:
        train_idx, hold_idx = np.arange(len(y)), np.arange(0)
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=seed
    )
    with _quiet():
        splits = list(splitter.split(np.zeros(len(train_idx)), y[train_idx]))
    return train_idx, hold_idx, splits


def _refit(
    schema: Schema,
    names: list[str],
    task: str,
    X: pd.DataFrame,
    y: np.ndarray,
    seed: int,
    n_classes: int,
    workers: int,
) -> list[Pipeline]:
    """The pipelines of `names` fitted on (X, y), in parallel threads (a blend's members)."""

    def fit(name: str) -> Pipeline:
        pipeline, fit_params = build_pipeline(schema, spec(name), task, len(y), seed, n_classes)
        with threadpool_limits(limits=1, user_api="openmp"):
            return pipeline.fit(X, y, **fit_params)

    with _quiet(), threadpool_limits(limits=1, user_api="blas"):
        if len(names) == 1:
            return [fit(names[0])]
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
            return list(pool.map(fit, names))


def resolve_task(task: str, labels: pd.Series) -> tuple[str, str]:
    """The task to run and a sentence saying why (recorded with the model)."""
    if task not in ("auto", "classification", "regression"):
        raise ValueError("task must be 'auto', 'classification' or 'regression'")
    kind = _label_kind(labels)
    if task == "regression":
        if kind == "label":
            raise ValueError("regression needs a numeric target")
        return task, "requested"
    if task == "classification":
        return task, "requested"
    if kind == "label":
        return "classification", "auto: the target is a string or boolean"
    distinct = labels.nunique()
    limit = MAX_CLASSES_FOR_INTEGER_TARGET
    if kind == "integer" and distinct <= limit:
        return "classification", f"auto: whole-number target with {distinct} <= {limit} values"
    return "regression", "auto: numeric target" + (
        f" with {distinct} > {limit} distinct values" if kind == "integer" else ""
    )


def _label_kind(labels: pd.Series) -> str:
    """label (strings, booleans, categories), integer (whole numbers, even stored as float
    because a null forced it) or float."""
    dtype = labels.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "label"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        values = labels.to_numpy(dtype="float64")
        return "integer" if np.all(values == np.round(values)) else "float"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        values = labels.tolist()
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values):
            return _label_kind(pd.Series(values, dtype="float64"))
        return "label"
    return "label"


def _target(labels: pd.Series, task: str) -> tuple[np.ndarray, list[Any] | None]:
    """The target as a numpy array, and the sorted classes (the last one is "positive")."""
    if task == "regression":
        return labels.to_numpy(dtype="float64"), None
    kind = _label_kind(labels)
    if kind == "integer":
        y = labels.to_numpy(dtype="float64").astype("int64")
    elif pd.api.types.is_bool_dtype(labels.dtype) or all(
        isinstance(v, bool | np.bool_) for v in labels.tolist()
    ):
        y = labels.to_numpy(dtype=bool)
    else:
        y = np.array([v if isinstance(v, str) else str(v) for v in labels.tolist()], dtype=object)
    values, counts = np.unique(y, return_counts=True)
    if len(values) < 2:
        raise ValueError("the target has a single class; nothing to classify")
    for value, count in zip(values, counts, strict=True):
        if count < 2:
            raise ValueError(f"class {value!r} has only {count} row; each class needs at least 2")
    return y, values.tolist()


def _candidates(
    models: Sequence[str] | None, task: str, n_rows: int
) -> tuple[list[str], list[str]]:
    """The models to compare, and those named that do not exist for `task`."""
    if models is None:
        return default_models(task, n_rows), []
    names = list(dict.fromkeys(models))
    if not names:
        raise ValueError("no models to train")
    for name in names:
        spec(name)  # raises on an unknown name, listing the known ones
    usable = [name for name in names if task in spec(name).tasks]
    if not usable:
        raise ValueError(f"none of the models {names} is for {task}")
    return usable, [name for name in names if name not in usable]


_Fold = tuple[dict[str, Any], float, "np.ndarray | None"]
"""One (model, fold) fit's scores, fit seconds and validation predictions."""

MAX_SHARED_BYTES = 64 * 2**20
"""A fold's preprocessed rows (fit and validation parts) are kept for the other models of
their kind up to this size; a larger fold is preprocessed per model."""


class _Preprocessed:
    """Each fold's rows through each kind of preprocessing, fitted once per (kind, fold) and
    shared by the models of that kind.

    Every candidate is `prep -> model`, and the prep depends only on the model's `prep` kind
    and the schema (`pipeline.build_pipeline`), so the scaled models (lr, ridge, lda, qda,
    nb, knn) would each refit the same imputer, scaler and encoder on the same rows: on a
    small table that costs ten times the model's fit (breast cancer, per fold: 10 ms of
    preprocessing, 0.75 ms for naive Bayes). The scores are the same: the same rows through
    the same deterministic steps. A kind's folds are dropped once no fit needs them.
    """

    def __init__(
        self,
        X: pd.DataFrame,
        splits: list[tuple[np.ndarray, np.ndarray]],
        preps: dict[str, ColumnTransformer],
    ) -> None:
        self.X, self.splits, self.preps = X, splits, preps
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        self._rows: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._unshared: set[str] = set()

    def rows(self, kind: str, fold: int) -> tuple[Any, Any]:
        """(fit rows, validation rows) of `fold` through a prep of `kind` fitted on the fit
        rows; made by the first fit that asks, while the others of the key wait for it."""
        key = (kind, fold)
        with self._lock:
            unshared = kind in self._unshared
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        if unshared:
            return self._make(kind, fold)
        with key_lock:
            found = self._rows.get(key)
            if found is not None:
                return found
            made = self._make(kind, fold)
            with self._lock:
                if made[0].nbytes + made[1].nbytes <= MAX_SHARED_BYTES:
                    self._rows[key] = made
                else:
                    self._unshared.add(kind)
            return made

    def drop(self, kind: str) -> None:
        with self._lock:
            for key in [key for key in self._rows if key[0] == kind]:
                del self._rows[key]

    def _make(self, kind: str, fold: int) -> tuple[Any, Any]:
        fit_idx, val_idx = self.splits[fold]
        prep = clone(self.preps[kind])
        return prep.fit_transform(self.X.iloc[fit_idx]), prep.transform(self.X.iloc[val_idx])


@dataclass(frozen=True)
class _Candidate:
    """A model to cross-validate: its prep kind, its unfitted estimator and fit kwargs."""

    kind: str
    model: Any
    fit_params: dict[str, Any]


class _Search:
    """Cross-validates the candidates: a queue of (model, fold) fits on a few threads."""

    def __init__(
        self,
        schema: Schema,
        task: str,
        classes: list[Any] | None,
        X: pd.DataFrame,
        y: np.ndarray,
        splits: list[tuple[np.ndarray, np.ndarray]],
        seed: int,
        n_classes: int,
        *,
        workers: int,
        budget: float | None,
        on_progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.schema, self.task, self.classes = schema, task, classes
        self.X, self.y, self.splits, self.seed = X, y, splits, seed
        self.n_classes = n_classes
        self.workers, self.on_progress, self.should_stop = workers, on_progress, should_stop
        self.deadline = None if budget is None else time.monotonic() + budget
        self.fold_scores: dict[str, list[dict[str, Any]]] = {}
        self.fit_seconds: dict[str, list[float]] = {}
        self.oof: dict[str, list[np.ndarray | None]] = {}
        """Per model, its predictions on each fold's validation rows (by fold number):
        probabilities in `classes` order (None without predict_proba), or regression values."""
        self.complete: list[str] = []
        self.failed: dict[str, str] = {}

    def run(self, names: list[str]) -> None:
        candidates: dict[str, _Candidate] = {}
        preps: dict[str, ColumnTransformer] = {}
        for n in names:
            pipeline, fit_params = build_pipeline(
                self.schema, spec(n), self.task, len(self.y), self.seed, self.n_classes
            )
            kind = spec(n).prep
            preps.setdefault(kind, pipeline.named_steps["prep"])
            model_params = {k.removeprefix("model__"): v for k, v in fit_params.items()}
            candidates[n] = _Candidate(kind, pipeline.named_steps["model"], model_params)
            self.fold_scores[n], self.fit_seconds[n] = [], []
            self.oof[n] = [None] * len(self.splits)
        self.preprocessed = _Preprocessed(self.X, self.splits, preps)
        # Made once: each threadpool_limits() looks up the loaded libraries anew (~4 ms a fit).
        self.controller = ThreadpoolController()
        queue = deque((n, f) for n in names for f in range(len(self.splits)))
        with (
            _quiet(),
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(max_workers=self.workers) as pool,
        ):
            self._drain(pool, queue, candidates, names)
        if not self.complete:
            raise RuntimeError(f"every model failed: {self.failed}")

    def _drain(
        self,
        pool: ThreadPoolExecutor,
        queue: deque[tuple[str, int]],
        candidates: dict[str, _Candidate],
        names: list[str],
    ) -> None:
        """Keep the pool busy until the queue is empty, the budget is spent or a stop."""
        total, done = len(queue), 0
        running: dict[Future[_Fold], tuple[str, int]] = {}
        while True:
            while queue and len(running) < self.workers:
                name, fold = queue[0]
                if name in self.failed:
                    queue.popleft()
                    continue
                if not self._may_start(name, names):
                    break
                self._check_stop()
                queue.popleft()
                running[self._submit(pool, candidates[name], fold)] = (name, fold)
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name, fold = running.pop(future)
                self._record(name, fold, future)
                kind = candidates[name].kind
                if not any(candidates[n].kind == kind for n, _ in [*queue, *running.values()]):
                    self.preprocessed.drop(kind)
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, total, name, fold + 1)
            self._check_stop()

    def _submit(self, pool: ThreadPoolExecutor, candidate: _Candidate, fold: int) -> Future[_Fold]:
        fit_idx, val_idx = self.splits[fold]
        return pool.submit(
            _fit_and_score,
            candidate,
            lambda: self.preprocessed.rows(candidate.kind, fold),
            self.y[fit_idx],
            self.y[val_idx],
            self.task,
            self.classes,
            self.controller,
        )

    def _record(self, name: str, fold: int, future: Future[_Fold]) -> None:
        try:
            scores, seconds, predictions = future.result()
        except Exception as exc:  # one model's failure must not sink the comparison
            self.failed.setdefault(name, f"{type(exc).__name__}: {exc}")
            return
        self.fold_scores[name].append(scores)
        self.fit_seconds[name].append(seconds)
        self.oof[name][fold] = predictions
        if name not in self.failed and len(self.fold_scores[name]) == len(self.splits):
            self.complete.append(name)

    def _may_start(self, name: str, names: list[str]) -> bool:
        """Within budget anything may start; past it only the first model still going, and
        only while no model has completed (so there is always a winner)."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return True
        if self.complete:
            return False
        return name == next((n for n in names if n not in self.failed), None)

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingStopped()

    def row(self, name: str) -> dict[str, Any]:
        names = metrics.metric_names(self.task)
        return {
            "model": name,
            "label": spec(name).label,
            **metrics.summarise(self.fold_scores[name], names),
            "fit_seconds": round(float(np.mean(self.fit_seconds[name])), 4),
            "folds": len(self.splits),
        }


def _fit_and_score(
    candidate: _Candidate,
    rows: Callable[[], tuple[Any, Any]],
    y_fit: np.ndarray,
    y_val: np.ndarray,
    task: str,
    classes: list[Any] | None,
    controller: ThreadpoolController,
) -> _Fold:
    """One fold, in a worker thread: the model fitted on the fold's preprocessed rows (its
    fit seconds are the model's alone). The OpenMP limit is per thread, so it is set here.
    Besides the scores, the validation predictions a blend is scored from."""
    with controller.limit(limits=1, user_api="openmp"):
        X_fit, X_val = rows()
        model = clone(candidate.model)
        started = time.perf_counter()
        model.fit(X_fit, y_fit, **candidate.fit_params)
        seconds = time.perf_counter() - started
        if task == "regression":
            predicted = np.asarray(model.predict(X_val), dtype="float64")
            return metrics.regression_scores(y_val, predicted), seconds, predicted
        assert classes is not None
        proba = metrics.probabilities(model, X_val, classes)
        scores = metrics.classification_scores(model, X_val, y_val, classes, proba=proba)
        return scores, seconds, proba


class _quiet(warnings.catch_warnings):
    """Silence warnings that would repeat per fold and say nothing actionable to a user.

    Filters are process-wide, so worker threads are covered while the caller's block runs.
    """

    def __enter__(self) -> Any:
        entered = super().__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*[Ff]ound unknown categories.*")
        return entered


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple) and all(
            isinstance(v, bool | int | float | str) for v in value
        ):
            out[key] = list(value)
        else:
            out[key] = repr(value)
    return out
