"""Per-column statistics of a stored dataset, for the console's dataset page.

One column is read at a time through the bounded Parquet reader, batch by batch, and only
its first `MAX_ROWS` rows: a page view in the API process must not read gigabytes (the
`describe` job computes the whole table's on a worker). Each summary is the one that job
writes: count and nulls, then mean, std, min and max for numbers, or the distinct count and
the most frequent values for the rest.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from submitter.datasets.limits import BoundedParquetFile
from submitter.datasets.service import open_parquet
from submitter.db.models import Dataset
from submitter.runtime import Runtime

#: Rows summarized at most (the first ones): bounds the time and memory of a page view.
MAX_ROWS = 200_000
BATCH_ROWS = 65_536
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


def _head(parquet: BoundedParquetFile, name: str, rows: int) -> pa.ChunkedArray:
    """The first `rows` values of column `name`, read a batch at a time."""
    chunks: list[pa.Array] = []
    seen = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[name]):
        chunks.append(batch.column(0).slice(0, rows - seen))
        seen += len(chunks[-1])
        if seen >= rows:
            break
    if not chunks:  # no rows
        return pa.chunked_array([], type=parquet.schema_arrow.field(name).type)
    return pa.chunked_array(chunks)  # text may come dictionary-encoded: `summarize` decodes


def column_stats(
    runtime: Runtime, dataset: Dataset, max_rows: int = MAX_ROWS
) -> tuple[list[dict[str, Any]], int]:
    """(`[{"name", "dtype", "count", "nulls", ...}]` for every column in order, the rows
    they summarize: all, or the first `max_rows`).

    Raises `LimitExceeded` for a stored dataset past the limits, as every read does."""
    parquet = open_parquet(runtime, dataset)
    try:
        rows = min(parquet.metadata.num_rows, max_rows)
        names = parquet.schema_arrow.names
        stats = [{"name": name, **summarize(_head(parquet, name, rows))} for name in names]
        return stats, rows
    finally:
        parquet.close()
