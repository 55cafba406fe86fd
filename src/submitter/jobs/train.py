"""`train`: compare models with k-fold CV on a dataset, register the best as a new version.

The ML lives in `submitter.ml`; this module is the glue: read the dataset version the job
was submitted with, hold the model name's lock (two trainings of one name run one after
the other, never at once, never dropped), report progress per (model, fold), save the
winner with skops and register it with its metrics, schema and provenance, then draw the
plots of the run (`submitter.ml.plots`) as the job's artifacts `plots/*.png`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import select

from submitter.jobs.context import JobCancelled, JobContext
from submitter.jobs.registry import JobKind, ResolvedSpec
from submitter.names import NAME_RULE, is_valid_name

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from submitter.ml import TrainResult
    from submitter.runtime import Runtime

PLOTS_FOLDER = "plots"
"""The training job's plots are its artifacts `plots/<name>.png` (see `submitter.ml.plots`)."""


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str = Field(min_length=1, description="Dataset id, name or name@version.")
    target: str = Field(min_length=1, description="The column to predict.")
    model_name: str = Field(description="Registry name; the best model becomes its next version.")
    task: Literal["auto", "classification", "regression"] = "auto"
    models: list[str] | None = Field(default=None, description="Short names; default: curated.")
    folds: int = Field(default=5, ge=2, le=20)
    metric: str | None = None
    holdout: float = Field(default=0.2, ge=0, lt=0.9)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seeds splits and models.")
    time_budget_seconds: float | None = Field(default=None, gt=0)
    blend: bool = Field(
        default=True, description="Add the average of the best models as a candidate."
    )

    @field_validator("model_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(NAME_RULE)
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from submitter.ml.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

        task = info.data.get("task", "auto")
        names = {
            "classification": CLASSIFICATION_METRICS,
            "regression": REGRESSION_METRICS,
        }.get(task, CLASSIFICATION_METRICS + REGRESSION_METRICS)
        for name in names:
            if name.lower() == value.lower():
                return name
        raise ValueError(f"unknown metric {value!r}; choose from {', '.join(names)}")

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from submitter.ml import available_models

        known = available_models()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; available: {', '.join(known)}")
        if not value:
            raise ValueError("give at least one model, or leave it out for the default set")
        return value


def check_columns(_: Runtime, connection: Connection, spec: dict[str, Any]) -> ResolvedSpec:
    """At submit, with the dataset pinned: the target must be one of its columns. The worker
    would find out only after queueing and reading the whole dataset."""
    from submitter.db.models import Dataset

    columns = connection.scalar(select(Dataset.columns).where(Dataset.id == spec["dataset"]))
    names = [column["name"] for column in columns or []]
    if spec["target"] in names:
        return spec, [], []
    error = {
        "loc": ["body", "spec", "target"],
        "msg": f"{spec['target']!r} is not a column of the dataset; columns: {', '.join(names)}",
        "type": "unknown_column",
        "input": spec["target"],
    }
    return spec, [], [error]


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None: JSON (and PostgreSQL's jsonb) has no place for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def run(spec: TrainSpec, ctx: JobContext) -> dict[str, Any]:
    from submitter.datasets.service import open_parquet, resolve
    from submitter.locks import LockWaitStopped, exclusive
    from submitter.ml import TrainingStopped, save, train
    from submitter.ml.compiled import compile_pipeline
    from submitter.registry.service import register_version

    runtime = ctx.runtime
    dataset = resolve(runtime, spec.dataset)
    table = open_parquet(runtime, dataset).read()
    if spec.target not in table.column_names:
        raise ValueError(
            f"target {spec.target!r} is not a column of {dataset.name}@{dataset.version}; "
            f"columns: {', '.join(table.column_names)}"
        )
    ctx.log(f"training on {dataset.name}@{dataset.version}: {table.num_rows} rows")

    def progress(done: int, total: int, model: str, fold: int) -> None:
        ctx.progress(done / total, f"{model} fold {fold}/{spec.folds}", "training")

    try:
        with exclusive(
            runtime,
            f"model:{spec.model_name}",
            should_stop=ctx.cancelled.is_set,
            on_wait=lambda: ctx.progress(
                None, f"another training of {spec.model_name} is running", "waiting"
            ),
        ):
            ctx.log(f"holding the training lock of {spec.model_name}")
            ctx.progress(0.0, "comparing models", "training")
            result = train(
                table,
                spec.target,
                task=spec.task,
                models=spec.models,
                folds=spec.folds,
                metric=spec.metric,
                holdout=spec.holdout,
                seed=spec.seed,
                time_budget_seconds=spec.time_budget_seconds,
                blend=spec.blend,
                on_progress=progress,
                should_stop=ctx.cancelled.is_set,
            )
            leaderboard = _json_safe(result.leaderboard)
            for row in leaderboard:
                ctx.log(f"{row['model']:>10}  {result.metric} {row.get(result.metric)}")
            (ctx.workdir / "leaderboard.json").write_text(json.dumps(leaderboard, indent=2))
            ctx.progress(None, f"compiling {result.best_model}", "registering")
            compilation = compile_pipeline(
                result.pipeline, result.feature_schema, result.task, result.classes,
                result.X_holdout,
            )  # fmt: skip
            serving = compilation.serving
            ctx.log(
                f"serving with {serving['path']}"
                + (f": {serving['reason']}" if serving.get("reason") else "")
            )
            ctx.progress(None, f"registering {result.best_model}", "registering")
            with tempfile.TemporaryDirectory(prefix="submitter-model-") as tmp:
                model_file = Path(tmp) / "model.skops"
                save(result.pipeline, model_file)
                version = register_version(
                    runtime,
                    name=spec.model_name,
                    model_file=model_file,
                    compiled=compilation.onnx,
                    fields={
                        "task": result.task,
                        "algorithm": result.best_model,
                        "metric": result.metric,
                        "metrics": _json_safe(
                            {
                                "cv": leaderboard[0],
                                "holdout": result.holdout_metrics,
                                "serving": serving,
                            }
                        ),
                        "leaderboard": leaderboard,
                        "params": _json_safe(result.params),
                        "feature_schema": _json_safe(result.feature_schema),
                        "classes": _json_safe(result.classes),
                        "target": spec.target,
                        "dataset_id": dataset.id,
                        "job_id": ctx.job_id,
                    },
                )
            # Inside the lock, so the log shows each training's hold ending before the next.
            ctx.log(f"registered {spec.model_name} version {version.version} ({result.best_model})")
    except (TrainingStopped, LockWaitStopped):
        raise JobCancelled() from None
    # After registering and outside the lock: the version can be promoted, and the next
    # training of this name can start, while the plots are drawn.
    plots = _make_plots(ctx, spec, dataset.name, dataset.version, version.version, result)
    return _json_safe(
        {
            "model_name": spec.model_name,
            "version": version.version,
            "task": result.task,
            "metric": result.metric,
            "best_model": result.best_model,
            "cv": leaderboard[0],
            "holdout": result.holdout_metrics,
            "leaderboard": leaderboard,
            "skipped": result.skipped,
            "failed": result.failed,
            "plots": plots,
        }
    )


def _make_plots(
    ctx: JobContext,
    spec: TrainSpec,
    dataset_name: str,
    dataset_version: int,
    version: int,
    result: TrainResult,
) -> list[str]:
    """Draw the plots of the run into `plots/` of the workdir (kept as the job's artifacts);
    return their artifact names. Plots are a nicety: any failure is a warning in the job's
    log and the plot is skipped, never a failed training."""
    ctx.progress(None, "drawing plots", "plotting")
    started = time.monotonic()
    try:
        from submitter.ml.plots import PlotContext, training_plots

        cv_scores = {
            row["label"]: [fold.get(result.metric) for fold in result.fold_scores[row["model"]]]
            for row in result.leaderboard
        }
        context = PlotContext(
            model_name=spec.model_name,
            model_version=version,
            algorithm=result.leaderboard[0]["label"],  # a blend has no catalogue entry
            dataset_name=dataset_name,
            dataset_version=dataset_version,
        )
        made = training_plots(
            result.pipeline,
            result.X_holdout,
            result.y_holdout,
            task=result.task,
            classes=result.classes,
            metric=result.metric,
            cv_scores=cv_scores,
            context=context,
            seed=spec.seed,
            should_stop=ctx.cancelled.is_set,
        )
    except Exception as exc:  # e.g. matplotlib missing or broken: train without plots
        ctx.log(f"no plots: {type(exc).__name__}: {exc}", "WARNING")
        return []
    ctx.check_cancelled()
    for file, error in made.failed.items():
        ctx.log(f"plot {file} skipped: {error}", "WARNING")
    names = []
    try:
        folder = ctx.workdir / PLOTS_FOLDER
        folder.mkdir(exist_ok=True)
        for file, png in made.files.items():
            (folder / file).write_bytes(png)
            names.append(f"{PLOTS_FOLDER}/{file}")
    except OSError as exc:
        ctx.log(f"plots not written: {exc}", "WARNING")
        shutil.rmtree(ctx.workdir / PLOTS_FOLDER, ignore_errors=True)
        return []
    timings = ", ".join(f"{file} {seconds:.1f}" for file, seconds in made.seconds.items())
    no_holdout = result.y_holdout is None or len(result.y_holdout) == 0
    ctx.log(
        f"plots: {len(names)} made in {time.monotonic() - started:.1f} s ({timings})"
        + ("; no holdout (holdout=0): only the CV plot" if no_holdout else "")
    )
    return sorted(names)


KIND = JobKind(
    name="train",
    spec_model=TrainSpec,
    run=run,
    queue="train",
    description="Compare models with k-fold CV; register the best as a new model version.",
    dataset_fields=("dataset",),
    resolve_spec=check_columns,
)
