"""A sweep's result table: one row per child, its parameters next to its numbers.

The numbers are the child's result flattened to dotted names (`cv.roc_auc`,
`slurm.elapsed_seconds`): every kind's result works without the kind knowing about
sweeps; next to them, the last value of each metric the child reported from inside
(submitter.jobmetrics: the highest step's, the latest of that step). `best_by` sorts by
a result value or, when no child's result has that name, a metric's last value (highest
first; `-name` for lowest first) and names the best child; rows without it go last. A name
that is neither is a 422 listing the names there are (a typo would otherwise sort nothing
and name no best child, silently).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from submitter.datasets.errors import QueryError
from submitter.db.models import Job, JobMetric
from submitter.runtime import Runtime
from submitter.sweeps.matrix import combinations

#: How deep a result is flattened (a train result's `cv.roc_auc` is depth 2).
MAX_DEPTH = 3


def flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, float]:
    """The numeric leaves of a JSON value, by dotted path (lists and text are skipped)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        number = float(value)
        return {prefix: number} if prefix and math.isfinite(number) else {}
    if isinstance(value, dict) and depth < MAX_DEPTH:
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key), depth + 1))
        return out
    return {}


def sort_key(best_by: str) -> tuple[str, bool]:
    """(`name`, lower_is_better) from `name` or `-name`."""
    return (best_by[1:], True) if best_by.startswith("-") else (best_by, False)


def compare(
    runtime: Runtime, parent: Job, children: Sequence[Any], best_by: str | None
) -> dict[str, Any]:
    """The table `GET /api/v1/jobs/{id}/sweep` answers (see SweepTable)."""
    matrix = parent.spec.get("matrix") or {}
    combos = combinations(matrix)
    metrics = last_metrics(runtime, [child.id for child in children])
    rows = []
    for child in children:
        index = child.sweep_index
        values = flatten(child.result) if isinstance(child.result, dict) else {}
        rows.append(
            {
                "index": index,
                "job_id": child.id,
                "state": child.state,
                "message": child.message,
                "external_id": child.external_id,
                "params": combos[index] if index is not None and index < len(combos) else {},
                "values": values,
                "metrics": metrics.get(child.id, {}),
            }
        )
    columns = sorted({name for row in rows for name in row["values"]})
    metric_columns = sorted({name for row in rows for name in row["metrics"]})
    best = None
    if best_by:
        name, lower = sort_key(best_by)
        where = "values" if name in columns else "metrics" if name in metric_columns else None
        if where is None:
            known = ", ".join(columns + [n for n in metric_columns if n not in columns])
            raise QueryError(
                "best_by",
                f"no child has a result value or metric named {name!r}"
                + (f" (there are: {known[:800]})" if known else " (no child has any yet)"),
            )
        have = [r for r in rows if name in r[where]]
        rest = [r for r in rows if name not in r[where]]
        have.sort(key=lambda r: r[where][name], reverse=not lower)
        rows = have + rest
        best = have[0]["job_id"] if have else None
    return {
        "sweep_id": parent.id,
        "state": parent.state,
        "message": parent.message,
        "parameters": list(matrix),
        "columns": columns,
        "metric_columns": metric_columns,
        "best_by": best_by,
        "best": best,
        "rows": rows,
    }


def last_metrics(runtime: Runtime, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """{job id: {metric name: its last value}}: the highest step's, of that step the latest
    arrival. One query for all the children (ordered so that the last row per name wins)."""
    out: dict[str, dict[str, float]] = {}
    if not job_ids:
        return out
    with runtime.reads() as session:
        rows = session.execute(
            select(JobMetric.job_id, JobMetric.name, JobMetric.value)
            .where(JobMetric.job_id.in_(list(job_ids)))
            .order_by(JobMetric.job_id, JobMetric.name, JobMetric.step, JobMetric.id)
        )
        for job_id, name, value in rows:
            if math.isfinite(value):
                out.setdefault(job_id, {})[name] = float(value)
    return out
