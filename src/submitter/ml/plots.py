"""Plots of a training run, as PNG bytes: data in, image out, no job or storage code.

The training job draws them once, from what it already holds at the end of training (the
fitted pipeline, the holdout rows, every compared model's per-fold scores), and keeps them as
job artifacts, so the API, the CLI and the console all show the same files instead of each
re-deriving curves from a model file.

matplotlib is imported only inside the functions that draw (it costs about half a second,
which the CLI and the API must not pay at start-up), and only through its object-oriented
API with an explicit Agg canvas: no `pyplot`, so no process-wide backend or figure registry,
nothing shared between two plots. Every figure is `SIZE_INCHES` at `DPI` (800 x 600 px),
with labelled axes, a legend where there are several series, and a title whose second line
names the model version and the dataset version it was trained on.

Work is bounded so that a big table does not make training much slower: curves and matrices
score at most `MAX_SCORED_ROWS` holdout rows, scatter plots draw at most `MAX_POINTS`, and
permutation importance shuffles each feature `IMPORTANCE_REPEATS` times over at most
`IMPORTANCE_ROWS` rows, fewer when there are many features (`IMPORTANCE_BUDGET`) or when
the repeats take too long (`IMPORTANCE_SECONDS`).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from submitter.ml.metrics import LOWER_IS_BETTER

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
SIZE_INCHES = (8.0, 6.0)
"""800 x 600 px at 100 dpi: readable on a laptop screen and in a README, a few tens of kB."""

MAX_SCORED_ROWS = 20_000
"""Holdout rows predicted for the curves, the confusion matrix and the regression plots."""
MAX_POINTS = 5_000
"""Points drawn in a scatter plot; more only blur into one blob and slow the PNG encoder."""
IMPORTANCE_ROWS = 1_000
IMPORTANCE_REPEATS = 3
IMPORTANCE_BUDGET = 100_000
"""Rows predicted by permutation importance at most (features x repeats x rows): with many
features, first the repeats and then the rows shrink, down to 1 repeat and 200 rows. The cost
is mostly per row predicted (LightGBM about 30 us a row here). On the 23 features of
tests/data/credit.csv, 3 x 1,000 rows cost 2.3-3.2x less than 5 x 2,000 and found the same
top feature and 3-4 of the same top 5 (lr, et, hgb, lightgbm); the rest lie within
each other's error bars either way."""
IMPORTANCE_SECONDS = 4.0
"""No further repeat starts if it would end later than this after the first began."""
TOP_FEATURES = 20
MAX_MATRIX_CLASSES = 30
"""A confusion matrix shows the most frequent classes of the holdout, at most this many."""
MAX_LABEL = 28
"""Tick labels (feature names, classes) are cut to this many characters, in the middle."""

PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "confusion": "confusion.png",
    "pred_vs_actual": "pred_vs_actual.png",
    "residuals": "residuals.png",
    "importance": "importance.png",
    "cv_scores": "cv_scores.png",
}
"""The fixed file name of each plot; the training job keeps them under `plots/`."""


@dataclass(frozen=True)
class PlotContext:
    """What every title says: which model version, trained on which dataset version."""

    model_name: str
    model_version: int
    algorithm: str
    dataset_name: str
    dataset_version: int

    def title(self, what: str) -> str:
        return (
            f"{what}\n{self.model_name} v{self.model_version} ({self.algorithm})"
            f" · dataset {self.dataset_name} v{self.dataset_version}"
        )


@dataclass
class PlotSet:
    """The plots that were made (file name -> PNG), those that failed (name -> error), and
    how long each took, so a job can log what plotting cost."""

    files: dict[str, bytes] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Importance:
    """Permutation importance of every feature, and how it was measured."""

    features: list[str]
    means: np.ndarray
    stds: np.ndarray
    scoring: str
    """What a bar's length is, e.g. "decrease in AUC" or "increase in MAE"."""
    rows: int
    repeats: int


# --- the whole set ----------------------------------------------------------------------------


def training_plots(
    pipeline: Any,
    X_holdout: pd.DataFrame | None,
    y_holdout: np.ndarray | None,
    *,
    task: str,
    classes: Sequence[Any] | None,
    metric: str,
    cv_scores: Mapping[str, Sequence[float | None]],
    context: PlotContext,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> PlotSet:
    """Every plot that applies to the task; one plot's failure never stops the others.

    Binary classification: ROC, precision-recall, confusion matrix; multiclass: confusion
    matrix; regression: predicted vs actual, residuals; all: permutation importance on the
    holdout, and the CV spread of `metric` for every compared model (`cv_scores`: model label
    -> per-fold values, best model first). Without holdout rows (`holdout=0`) only the CV plot
    can be made. `should_stop()` is polled between plots; once it is true, the plots made so
    far are returned.
    """
    makers: dict[str, Callable[[], bytes]] = {}
    if X_holdout is not None and y_holdout is not None and len(y_holdout) > 0:
        makers.update(
            _holdout_makers(
                pipeline, X_holdout, np.asarray(y_holdout), task, classes, metric, context, seed
            )
        )

    def cv() -> bytes:
        title = context.title(f"Cross-validated {metric} of every compared model")
        return cv_scores_png(cv_scores, metric=metric, title=title)

    makers["cv_scores"] = cv
    out = PlotSet()
    for name, make in makers.items():
        if should_stop is not None and should_stop():
            break
        started = time.perf_counter()
        try:
            out.files[PLOT_FILES[name]] = make()
        except Exception as exc:  # a plot is a nicety: the training stands without it
            out.failed[PLOT_FILES[name]] = f"{type(exc).__name__}: {exc}"
        out.seconds[PLOT_FILES[name]] = round(time.perf_counter() - started, 3)
    return out


def _holdout_makers(
    pipeline: Any,
    X_holdout: pd.DataFrame,
    y_holdout: np.ndarray,
    task: str,
    classes: Sequence[Any] | None,
    metric: str,
    context: PlotContext,
    seed: int,
) -> dict[str, Callable[[], bytes]]:
    """The holdout plots of the task, each a thunk; predictions are made once and shared."""
    X, y = _sample(X_holdout, y_holdout, MAX_SCORED_ROWS, seed)
    rows = f"holdout ({len(y):,} rows)"
    makers: dict[str, Callable[[], bytes]] = {}
    if task == "classification":
        assert classes is not None
        labels = list(classes)
        if len(labels) == 2:
            positive = labels[1]
            truth = y == positive
            scores = _once(lambda: _positive_scores(pipeline, X, positive))

            def roc() -> bytes:
                title = context.title(f"ROC curve, {rows}")
                return roc_png(truth, scores(), positive=positive, title=title)

            def pr() -> bytes:
                title = context.title(f"Precision-recall curve, {rows}")
                return pr_png(truth, scores(), positive=positive, title=title)

            makers.update(roc=roc, pr=pr)

        def confusion() -> bytes:
            title = context.title(f"Confusion matrix, {rows}")
            return confusion_png(y, np.asarray(pipeline.predict(X)), labels, title=title)

        makers["confusion"] = confusion
    else:
        actual = np.asarray(y, dtype="float64")
        predicted = _once(lambda: np.asarray(pipeline.predict(X), dtype="float64"))

        def pred_vs_actual() -> bytes:
            title = context.title(f"Predicted vs actual, {rows}")
            return pred_vs_actual_png(actual, predicted(), title=title)

        def residuals() -> bytes:
            title = context.title(f"Residuals, {rows}")
            return residuals_png(actual, predicted(), title=title)

        makers.update(pred_vs_actual=pred_vs_actual, residuals=residuals)

    def importance() -> bytes:
        found = permutation_importances(
            pipeline, X_holdout, y_holdout, task=task, classes=classes, metric=metric, seed=seed
        )
        repeats = f"{found.repeats} repeat{'s' if found.repeats > 1 else ''}"
        title = context.title(f"Permutation importance, holdout ({found.rows:,} rows, {repeats})")
        return importance_png(found.features, found.means, found.stds, found.scoring, title=title)

    makers["importance"] = importance
    return makers


# --- permutation importance -------------------------------------------------------------------


def permutation_importances(
    pipeline: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    classes: Sequence[Any] | None,
    metric: str,
    seed: int = 0,
) -> Importance:
    """How much the ranking `metric` drops when each raw feature column is shuffled.

    Measured on the whole pipeline, so a string column counts once (not per one-hot
    column) and preprocessing is included. The rows and repeats are bounded (see
    `IMPORTANCE_BUDGET` and `IMPORTANCE_SECONDS`). A metric that cannot be scored on the
    sample (AUC with a class missing from it, RMSLE with negative targets) falls back to
    accuracy or R².
    """
    n_features = max(1, X.shape[1])
    rows = min(len(y), IMPORTANCE_ROWS)
    repeats = max(1, min(IMPORTANCE_REPEATS, IMPORTANCE_BUDGET // (n_features * max(1, rows))))
    rows = min(rows, max(200, IMPORTANCE_BUDGET // (n_features * repeats)))
    X_sample, y_sample = _sample(X, y, rows, seed)
    error: Exception | None = None
    for scoring, label in _scorers(task, classes, metric):
        try:
            found = _repeats(pipeline, X_sample, y_sample, scoring, repeats, seed)
        except ValueError as exc:
            error = exc
            continue
        return Importance(
            features=[str(c) for c in X_sample.columns],
            means=found.mean(axis=0),
            stds=found.std(axis=0),
            scoring=label,
            rows=len(y_sample),
            repeats=len(found),
        )
    assert error is not None
    raise error


def _repeats(
    pipeline: Any, X: pd.DataFrame, y: np.ndarray, scoring: Any, repeats: int, seed: int
) -> np.ndarray:
    """Importances per repeat (repeats x features), one repeat at a time, and no repeat that
    would end past `IMPORTANCE_SECONDS` (the first always runs): on a busy machine, or with
    a slow model, the plot has fewer repeats instead of holding the job up."""
    from sklearn.inspection import permutation_importance
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    done: list[np.ndarray] = []
    for repeat in range(repeats):
        # One thread, as in training: OpenMP boosters on a busy machine are several times
        # slower with all cores than with one (HGB's predict measured 4x slower here).
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown categories, undefined metrics
            found = permutation_importance(
                pipeline, X, y, scoring=scoring, n_repeats=1, random_state=seed + repeat,
                n_jobs=1,
            )  # fmt: skip
        done.append(np.asarray(found.importances[:, 0], dtype="float64"))
        elapsed = time.perf_counter() - started
        if elapsed * (len(done) + 1) / len(done) > IMPORTANCE_SECONDS:
            break
    return np.vstack(done)


def _scorers(task: str, classes: Sequence[Any] | None, metric: str) -> list[tuple[Any, str]]:
    """scikit-learn scorers for the ranking metric, then the always-defined fallback."""
    from sklearn.metrics import (
        cohen_kappa_score,
        f1_score,
        make_scorer,
        precision_score,
        recall_score,
    )

    if task == "regression":
        regression = {
            "R2": ("r2", "decrease in R²"),
            "MAE": ("neg_mean_absolute_error", "increase in MAE"),
            "MSE": ("neg_mean_squared_error", "increase in MSE"),
            "RMSE": ("neg_root_mean_squared_error", "increase in RMSE"),
            "RMSLE": ("neg_root_mean_squared_log_error", "increase in RMSLE"),
            "MAPE": ("neg_mean_absolute_percentage_error", "increase in MAPE"),
        }
        chosen = [regression[metric]] if metric in regression else []
        return [*chosen, ("r2", "decrease in R²")]
    binary = classes is not None and len(classes) == 2
    positive = classes[1] if binary and classes is not None else None
    scorers: dict[str, Any] = {
        "Accuracy": "accuracy",
        "AUC": "roc_auc" if binary else "roc_auc_ovr",
        "Kappa": make_scorer(cohen_kappa_score),
        "MCC": "matthews_corrcoef",
    }
    for name, function in (
        ("F1", f1_score),
        ("Recall", recall_score),
        ("Precision", precision_score),
    ):
        scorers[name] = (
            make_scorer(function, pos_label=positive, zero_division=0)
            if binary
            else make_scorer(function, average="macro", zero_division=0)
        )
    chosen = [(scorers[metric], f"decrease in {metric}")] if metric in scorers else []
    return [*chosen, ("accuracy", "decrease in Accuracy")]


# --- one plot each ----------------------------------------------------------------------------


def roc_png(truth: np.ndarray, scores: np.ndarray, *, positive: Any, title: str) -> bytes:
    """ROC curve of a binary classifier: `truth` is True for the positive class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.asarray(truth, dtype=bool)
    _need_both_classes(truth)
    fpr, tpr, _ = roc_curve(truth, scores)
    auc = roc_auc_score(truth, scores)
    fig, ax = _figure()
    ax.plot(fpr, tpr, linewidth=2, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.500)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("False positive rate (share of negatives flagged)")
    ax.set_ylabel(f"True positive rate (recall of {_short(positive)!r})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig, ax, title)


def pr_png(truth: np.ndarray, scores: np.ndarray, *, positive: Any, title: str) -> bytes:
    """Precision-recall curve of a binary classifier, with the positive rate as the baseline."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    truth = np.asarray(truth, dtype=bool)
    _need_both_classes(truth)
    precision, recall, _ = precision_recall_curve(truth, scores)
    average = average_precision_score(truth, scores)
    rate = float(truth.mean())
    fig, ax = _figure()
    ax.step(recall, precision, where="post", linewidth=2, label=f"model (AP {average:.3f})")
    ax.axhline(rate, linestyle="--", color="grey", label=f"chance (positive rate {rate:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"Recall of {_short(positive)!r}")
    ax.set_ylabel(f"Precision of {_short(positive)!r}")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig, ax, title)


def confusion_png(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any], *, title: str
) -> bytes:
    """Counts of (actual, predicted); cells are shaded by the share of their actual class,
    so a rare class's errors show as clearly as a common one's."""
    from sklearn.metrics import confusion_matrix

    shown = list(classes)
    note = ""
    if len(shown) > MAX_MATRIX_CLASSES:
        values, counts = np.unique(np.asarray(y_true), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_MATRIX_CLASSES]
        frequent = {values[i] for i in order}
        shown = [c for c in shown if c in frequent]
        note = f" ({MAX_MATRIX_CLASSES} most frequent of {len(classes)} classes)"
    matrix = confusion_matrix(y_true, y_pred, labels=shown)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype="float64"), where=totals > 0)
    fig, ax = _figure()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of the actual class")
    if len(shown) <= 12:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j, i, f"{count:,}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=10,
                color="white" if share[i, j] > 0.5 else "black",
            )  # fmt: skip
    elif len(shown) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{count}", ha="center", va="center", fontsize=7, color=color)
    labels = [_short(c) for c in shown]
    size = 9 if len(shown) <= 20 else 7
    slanted = len(shown) > 6 or max(len(label) for label in labels) > 10
    ax.set_xticks(
        range(len(shown)), labels, rotation=45 if slanted else 0,
        ha="right" if slanted else "center", fontsize=size,
    )  # fmt: skip
    ax.set_yticks(range(len(shown)), labels, fontsize=size)
    ax.set_xlabel("Predicted class" + note)
    ax.set_ylabel("Actual class")
    return _png(fig, ax, title)


def pred_vs_actual_png(actual: np.ndarray, predicted: np.ndarray, *, title: str) -> bytes:
    """Each holdout row as a point; on the diagonal the prediction is exact."""
    from sklearn.metrics import r2_score

    actual, predicted = _finite_pairs(actual, predicted)
    r2 = r2_score(actual, predicted) if len(actual) > 1 else float("nan")
    rmse = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    x, y = _thin(actual, predicted)
    fig, ax = _figure()
    ax.scatter(x, y, s=10, alpha=0.35, label=f"holdout row (R² {r2:.3f}, RMSE {rmse:.4g})")
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linestyle="--", label="predicted = actual")
    ax.set_xlabel("Actual value")
    ax.set_ylabel("Predicted value")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig, ax, title)


def residuals_png(actual: np.ndarray, predicted: np.ndarray, *, title: str) -> bytes:
    """Residuals against the prediction: a funnel or a curve says where the model is off."""
    actual, predicted = _finite_pairs(actual, predicted)
    residual = actual - predicted
    mae = float(np.mean(np.abs(residual)))
    x, y = _thin(predicted, residual)
    fig, ax = _figure()
    ax.scatter(x, y, s=10, alpha=0.35, label=f"holdout row (MAE {mae:.4g})")
    ax.axhline(0, color="black", linestyle="--", label="no error")
    ax.set_xlabel("Predicted value")
    ax.set_ylabel("Residual (actual - predicted)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig, ax, title)


def importance_png(
    features: Sequence[str],
    means: np.ndarray,
    stds: np.ndarray,
    scoring: str,
    *,
    title: str,
) -> bytes:
    """The `TOP_FEATURES` most important features as bars (most important on top), with the
    spread over the repeats as error bars."""
    means, stds = np.asarray(means, dtype="float64"), np.asarray(stds, dtype="float64")
    if len(features) == 0 or len(features) != len(means):
        raise ValueError("need one importance per feature")
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")[:TOP_FEATURES][::-1]
    fig, ax = _figure()
    ax.barh(
        range(len(order)), means[order], xerr=stds[order], color="tab:blue", ecolor="grey",
        capsize=3, label="mean over the repeats (bar: ± 1 std)",
    )  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(order)), [_short(features[i]) for i in order], fontsize=9)
    top = f"top {len(order)} of {len(features)} features" if len(features) > len(order) else ""
    ax.set_ylabel("Feature" + (f" ({top})" if top else ""))
    ax.set_xlabel(f"Importance: {scoring} when the feature is shuffled")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, ax, title)


def cv_scores_png(
    scores: Mapping[str, Sequence[float | None]], *, metric: str, title: str
) -> bytes:
    """The spread of `metric` over the folds, one box per compared model, with each fold as
    a dot: a winner by a hair within overlapping boxes is a tie, not a discovery."""
    import textwrap

    series = {
        label: [float(v) for v in values if v is not None and np.isfinite(v)]
        for label, values in scores.items()
    }
    series = {label: values for label, values in series.items() if values}
    if not series:
        raise ValueError(f"no model has a {metric} score")
    fig, ax = _figure()
    data = list(series.values())
    positions = np.arange(1, len(data) + 1)
    ax.boxplot(data, positions=positions, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for position, values in zip(positions, data, strict=True):
        jitter = rng.uniform(-0.12, 0.12, size=len(values))
        ax.scatter(position + jitter, values, s=22, color="tab:blue", alpha=0.7, zorder=3)
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color="tab:blue", label="one fold"),
            Line2D([], [], color="tab:orange", label="median over the folds"),
        ],
        loc="best",
    )
    labels = [textwrap.fill(label, 16) for label in series]
    ax.set_xticks(positions, labels, fontsize=9)
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    ax.set_xlabel("Model (ranked best first)")
    ax.set_ylabel(f"{metric} on each validation fold ({better} is better)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig, ax, title)


# --- helpers ----------------------------------------------------------------------------------


def _figure() -> tuple[Figure, Axes]:
    """A figure on its own Agg canvas (no pyplot, no global state), laid out to fit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure, ax: Axes, title: str) -> bytes:
    ax.set_title(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _positive_scores(pipeline: Any, X: pd.DataFrame, positive: Any) -> np.ndarray:
    """A score that grows with the positive class: its probability, else the margin."""
    fitted = list(pipeline.classes_)
    if hasattr(pipeline, "predict_proba"):
        return np.asarray(pipeline.predict_proba(X))[:, fitted.index(positive)]
    margin = np.asarray(pipeline.decision_function(X), dtype="float64")
    return margin if fitted.index(positive) == 1 else -margin


def _sample(X: pd.DataFrame, y: np.ndarray, limit: int, seed: int) -> tuple[pd.DataFrame, Any]:
    """At most `limit` rows, drawn without replacement, in their original order."""
    if len(y) <= limit:
        return X.reset_index(drop=True), np.asarray(y)
    index = np.sort(np.random.default_rng(seed).choice(len(y), size=limit, replace=False))
    return X.iloc[index].reset_index(drop=True), np.asarray(y)[index]


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    index = np.random.default_rng(0).choice(len(x), size=MAX_POINTS, replace=False)
    return x[index], y[index]


def _finite_pairs(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    keep = np.isfinite(actual) & np.isfinite(predicted)
    if not keep.any():
        raise ValueError("no finite (actual, predicted) pair to plot")
    return actual[keep], predicted[keep]


def _need_both_classes(truth: np.ndarray) -> None:
    if truth.all() or not truth.any():
        raise ValueError("the holdout holds one class only; the curve is undefined")


def _once(make: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """`make` called at most once, its result reused (two plots share one prediction)."""
    kept: list[np.ndarray] = []

    def get() -> np.ndarray:
        if not kept:
            kept.append(make())
        return kept[0]

    return get


def _short(value: Any) -> str:
    """A label cut in the middle: names that share a long prefix differ at the end."""
    text = str(value)
    if len(text) <= MAX_LABEL:
        return text
    tail = (MAX_LABEL - 1) // 2
    return text[: MAX_LABEL - 1 - tail] + "…" + text[-tail:]
