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
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from submitter.ml import metrics
from submitter.ml.features import Schema, feature_schema, model_frame
from submitter.ml.models import DEFAULT_MODELS, spec
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
) -> TrainResult:
    """Train and compare `models` (default `DEFAULT_MODELS`) on `data` to predict `target`.

    `task="auto"` picks classification for a string or boolean target, or a whole-number one
    with at most 20 distinct values, else regression. Rows whose target is null are dropped.
    `metric` ranks the leaderboard (default AUC for binary, Accuracy for multiclass, R2).
    `holdout=0` skips the holdout (the winner is then refit on all rows and
    `holdout_metrics` is empty). `on_progress(done, total, model, fold)` is called after each
    (model, fold) with 1-based fold numbers; `should_stop()` between fits raises
    `TrainingStopped`. Once `time_budget_seconds` of CV have passed no further fits start, but
    the first model to complete is always awaited; unfinished candidates land in `skipped`.
    `n_jobs` folds are fitted in parallel (default: the usable CPUs, cgroup quotas included,
    at most `folds`).
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
    names = _candidates(models)
    metric = metrics.resolve_metric(task, metric, len(classes or []))

    stratify = y if task == "classification" else None
    if holdout > 0:
        train_idx, hold_idx = train_test_split(
            np.arange(len(y)), test_size=holdout, stratify=stratify, random_state=seed
        )
    else:
        train_idx, hold_idx = np.arange(len(y)), np.arange(0)
    X_train, y_train = X.iloc[train_idx].reset_index(drop=True), y[train_idx]
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=seed
    )
    with _quiet():
        splits = list(splitter.split(X_train, y_train))

    search = _Search(
        schema, task, classes, X_train, y_train, splits, seed,
        workers=max(1, min(n_jobs or cpu_count(), folds)),
        budget=time_budget_seconds, on_progress=on_progress, should_stop=should_stop,
    )  # fmt: skip
    search.run(names)
    cv_seconds = time.monotonic() - started

    names_done = [n for n in names if n in search.complete]
    leaderboard = sorted((search.row(n) for n in names_done), key=metrics.sort_key(metric))
    best = leaderboard[0]["model"]
    if should_stop is not None and should_stop():
        raise TrainingStopped()

    refit_started = time.monotonic()
    pipeline, fit_params = build_pipeline(schema, spec(best), task, len(y_train), seed)
    with _quiet(), threadpool_limits(limits=1, user_api="openmp"):
        pipeline.fit(X_train, y_train, **fit_params)
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
        params=_json_safe(pipeline.named_steps["model"].get_params(deep=False)),
        skipped=[n for n in names if n not in search.complete and n not in search.failed],
        failed=dict(search.failed),
        settings={
            "target": target,
            "task_rule": rule,
            "models": names,
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
        fold_scores={n: list(search.fold_scores[n]) for n in names_done},
        X_holdout=X.iloc[hold_idx].reset_index(drop=True),
        y_holdout=y[hold_idx],
    )


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


def _candidates(models: Sequence[str] | None) -> list[str]:
    names = list(dict.fromkeys(models if models is not None else DEFAULT_MODELS))
    if not names:
        raise ValueError("no models to train")
    for name in names:
        spec(name)  # raises on an unknown name, listing the known ones
    return names


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
        *,
        workers: int,
        budget: float | None,
        on_progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.schema, self.task, self.classes = schema, task, classes
        self.X, self.y, self.splits, self.seed = X, y, splits, seed
        self.workers, self.on_progress, self.should_stop = workers, on_progress, should_stop
        self.deadline = None if budget is None else time.monotonic() + budget
        self.fold_scores: dict[str, list[dict[str, Any]]] = {}
        self.fit_seconds: dict[str, list[float]] = {}
        self.complete: list[str] = []
        self.failed: dict[str, str] = {}

    def run(self, names: list[str]) -> None:
        templates = {
            n: build_pipeline(self.schema, spec(n), self.task, len(self.y), self.seed)
            for n in names
        }
        for n in names:
            self.fold_scores[n], self.fit_seconds[n] = [], []
        queue = deque((n, f) for n in names for f in range(len(self.splits)))
        with (
            _quiet(),
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(max_workers=self.workers) as pool,
        ):
            self._drain(pool, queue, templates, names)
        if not self.complete:
            raise RuntimeError(f"every model failed: {self.failed}")

    def _drain(
        self,
        pool: ThreadPoolExecutor,
        queue: deque[tuple[str, int]],
        templates: dict[str, tuple[Pipeline, dict[str, Any]]],
        names: list[str],
    ) -> None:
        """Keep the pool busy until the queue is empty, the budget is spent or a stop."""
        total, done = len(queue), 0
        running: dict[Future[tuple[dict[str, Any], float]], tuple[str, int]] = {}
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
                running[self._submit(pool, templates[name], fold)] = (name, fold)
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name, fold = running.pop(future)
                self._record(name, future)
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, total, name, fold + 1)
            self._check_stop()

    def _submit(
        self, pool: ThreadPoolExecutor, template: tuple[Pipeline, dict[str, Any]], fold: int
    ) -> Future[tuple[dict[str, Any], float]]:
        fit_idx, val_idx = self.splits[fold]
        return pool.submit(
            _fit_and_score,
            *template,
            self.X.iloc[fit_idx],
            self.y[fit_idx],
            self.X.iloc[val_idx],
            self.y[val_idx],
            self.task,
            self.classes,
        )

    def _record(self, name: str, future: Future[tuple[dict[str, Any], float]]) -> None:
        try:
            scores, seconds = future.result()
        except Exception as exc:  # one model's failure must not sink the comparison
            self.failed.setdefault(name, f"{type(exc).__name__}: {exc}")
            return
        self.fold_scores[name].append(scores)
        self.fit_seconds[name].append(seconds)
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
    template: Pipeline,
    fit_params: dict[str, Any],
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    task: str,
    classes: list[Any] | None,
) -> tuple[dict[str, Any], float]:
    """One fold, in a worker thread. The OpenMP limit is per thread, so it is set here."""
    with threadpool_limits(limits=1, user_api="openmp"):
        model = clone(template)
        started = time.perf_counter()
        model.fit(X_fit, y_fit, **fit_params)
        seconds = time.perf_counter() - started
        return metrics.score(model, X_val, y_val, task, classes), seconds


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
