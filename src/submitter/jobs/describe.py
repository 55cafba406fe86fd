"""`describe`: per-column summary statistics of a dataset, written as a `summary.json` artifact.

A small real job over a dataset: it shows dataset references (the dataset cannot be
deleted while the job is queued or running) and job artifacts.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from submitter.jobs.context import JobContext
from submitter.jobs.registry import JobKind


class DescribeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="Dataset id, name or name@version.", min_length=1)


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(column: pa.ChunkedArray) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dtype": str(column.type),
        "count": len(column) - column.null_count,
        "nulls": column.null_count,
    }
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        bounds = pc.min_max(column).as_py()
        summary.update(
            mean=_number(pc.mean(column).as_py()),
            std=_number(pc.stddev(column, ddof=1).as_py()),
            min=_number(bounds["min"]),
            max=_number(bounds["max"]),
        )
    else:
        summary["distinct"] = pc.count_distinct(column).as_py()
    return summary


def run(spec: DescribeSpec, ctx: JobContext) -> dict[str, Any]:
    from submitter.datasets.service import open_parquet, resolve

    dataset = resolve(ctx.runtime, spec.dataset)
    ctx.log(f"describing {dataset.name}@{dataset.version} ({dataset.row_count} rows)")
    parquet = open_parquet(ctx.runtime, dataset)
    names = parquet.schema_arrow.names
    columns: dict[str, Any] = {}
    for index, name in enumerate(names):
        ctx.check_cancelled()
        columns[name] = _summary(parquet.read(columns=[name]).column(0))
        ctx.progress((index + 1) / len(names))
    summary = {"dataset": dataset.id, "rows": dataset.row_count, "columns": columns}
    (ctx.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"dataset": dataset.id, "rows": dataset.row_count, "columns": len(columns)}


KIND = JobKind(
    name="describe",
    spec_model=DescribeSpec,
    run=run,
    description="Column statistics of a dataset; writes summary.json.",
    dataset_fields=("dataset",),
)
