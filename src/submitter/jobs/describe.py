"""`describe`: per-column summary statistics of a dataset, written as a `summary.json` artifact.

A small real job over a dataset: it shows dataset references (the dataset cannot be
deleted while the job is queued or running) and job artifacts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from submitter.jobs.context import JobContext
from submitter.jobs.registry import JobKind


class DescribeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="Dataset id, name or name@version.", min_length=1)


def run(spec: DescribeSpec, ctx: JobContext) -> dict[str, Any]:
    from submitter.datasets.service import open_parquet, resolve
    from submitter.datasets.stats import summarize  # the console's dataset page shows the same

    dataset = resolve(ctx.runtime, spec.dataset)
    ctx.log(f"describing {dataset.name}@{dataset.version} ({dataset.row_count} rows)")
    parquet = open_parquet(ctx.runtime, dataset)
    names = parquet.schema_arrow.names
    columns: dict[str, Any] = {}
    for index, name in enumerate(names):
        ctx.check_cancelled()
        columns[name] = summarize(parquet.read(columns=[name]).column(0))
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
