"""Per-column statistics of a stored dataset, for the console's dataset page.

One column is read at a time through the bounded Parquet reader (so memory stays within
the `SUBMITTER_MAX_*_BYTES` limits whatever the dataset), and each summary is the one the
`describe` job writes: count and nulls, then mean, std, min and max for numbers, or the
distinct count and the most frequent values for the rest.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from submitter.datasets.service import open_parquet
from submitter.db.models import Dataset
from submitter.runtime import Runtime

#: Most frequent values listed for a text column.
TOP_VALUES = 3
#: Characters of a listed value.
VALUE_CHARS = 40


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def summarize(column: pa.ChunkedArray) -> dict[str, Any]:
    """count, nulls, and numeric moments or distinct values and the most frequent ones."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    summary: dict[str, Any] = {
        "dtype": str(column.type),
        "count": len(column) - column.null_count,
        "nulls": column.null_count,
    }
    dtype = column.type
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        if summary["count"]:
            bounds = pc.min_max(column).as_py()
            summary.update(
                mean=_finite(pc.mean(column).as_py()),
                std=_finite(pc.stddev(column, ddof=1).as_py()),
                min=_finite(bounds["min"]),
                max=_finite(bounds["max"]),
            )
    elif pa.types.is_boolean(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        summary["distinct"] = pc.count_distinct(column).as_py()
        counts = pc.value_counts(column.drop_null())
        values, tallies = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
        pairs = sorted(zip(values, tallies, strict=True), key=lambda pair: -pair[1])
        summary["top"] = [(_short(value), count) for value, count in pairs[:TOP_VALUES]]
    else:
        summary["distinct"] = pc.count_distinct(column).as_py()
    return summary


def column_stats(runtime: Runtime, dataset: Dataset) -> list[dict[str, Any]]:
    """`[{"name", "dtype", "count", "nulls", ...}]` for every column, in order.

    Raises `LimitExceeded` for a stored dataset past the limits, as every read does."""
    parquet = open_parquet(runtime, dataset)
    try:
        names = parquet.schema_arrow.names
        return [
            {"name": name, **summarize(parquet.read(columns=[name]).column(0))} for name in names
        ]
    finally:
        parquet.close()
