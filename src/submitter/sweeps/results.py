"""A sweep's result table: one row per child, its parameters next to its numbers.

The numbers are the child's result flattened to dotted names (`cv.roc_auc`,
`slurm.elapsed_seconds`): every kind's result works without the kind knowing about
sweeps. `best_by` sorts by one of them (highest first; `-name` for lowest first) and names
the best child; rows without that value go last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from submitter.db.models import Job
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
            }
        )
    columns = sorted({name for row in rows for name in row["values"]})
    best = None
    if best_by:
        name, lower = sort_key(best_by)
        have = [r for r in rows if name in r["values"]]
        rest = [r for r in rows if name not in r["values"]]
        have.sort(key=lambda r: r["values"][name], reverse=not lower)
        rows = have + rest
        best = have[0]["job_id"] if have else None
    return {
        "sweep_id": parent.id,
        "state": parent.state,
        "message": parent.message,
        "parameters": list(matrix),
        "columns": columns,
        "best_by": best_by,
        "best": best,
        "rows": rows,
    }
