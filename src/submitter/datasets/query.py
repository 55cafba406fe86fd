"""Preview and aggregate a Parquet dataset with pyarrow, reading only the columns needed.

A source is a local path or a ``(pyarrow.fs.FileSystem, path)`` pair (S3). Results are
JSON-safe: NaN and infinities become None, dates and times ISO strings, decimals floats.

Filters are equalities ANDed together; their values arrive as text (``where=SEX:1``) and are
cast to the column's type. An empty value matches null. In float columns NaN is treated as
missing, as pandas does: it is not counted and does not poison a mean.

Every read goes through `BoundedParquetFile` (`submitter.datasets.limits`): a dataset that
decodes past the limits raises `LimitExceeded` before it is in memory. Every answer is
bounded too: a preview cuts text, binary and nested cells to `PREVIEW_CELL_CHARS` and stops
adding rows past `PREVIEW_MAX_BYTES`, and says which cells it cut (``truncated``); group
keys of an aggregate are cut the same way.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from submitter.datasets.errors import QueryError
from submitter.datasets.limits import BoundedParquetFile, DatasetLimits

__all__ = ["FUNCTIONS", "QueryError", "aggregate", "preview"]

Source = str | PathLike[str] | tuple[pafs.FileSystem, str]

#: fn -> (needs a column, the hash-aggregate function for group_by)
FUNCTIONS: dict[str, tuple[bool, str]] = {
    "count": (False, "count"),
    "mean": (True, "mean"),
    "sum": (True, "sum"),
    "min": (True, "min"),
    "max": (True, "max"),
    "nunique": (True, "count_distinct"),
}
#: More groups than this is refused: the answer would be a data dump, not an aggregate.
MAX_GROUPS = 10_000
#: A preview cell longer than this (characters of text, bytes of binary, characters of the
#: JSON of a nested value) is cut to it, and named in the answer's ``truncated``.
PREVIEW_CELL_CHARS = 4096
#: A preview stops adding rows once its cells hold about this many bytes (at least one row).
PREVIEW_MAX_BYTES = 4 << 20
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


def preview(source: Source, limit: int, limits: DatasetLimits | None = None) -> dict[str, Any]:
    """The first `limit` rows, bounded: ``{"columns", "rows", "truncated"}``.

    ``truncated`` is ``{"cell_chars", "cells": [{"row", "column", "bytes"}], "columns",
    "rows"}``: the cells cut to `PREVIEW_CELL_CHARS` (with their size in bytes, of their
    JSON for nested values), the columns that had any, and whether rows were left out to
    keep the answer under `PREVIEW_MAX_BYTES`. Cells are cut batch by batch as they are
    read, so memory stays small too.
    """
    if limit < 0:
        raise QueryError("limit", f"must be 0 or more, not {limit}")
    cut_cells: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    rows_left_out = False
    with _open(source, limits) as parquet:
        schema = parquet.schema_arrow
        names = list(schema.names)
        budget = PREVIEW_MAX_BYTES
        if limit > 0:
            for batch in parquet.iter_batches(batch_size=min(limit, 64 * 1024)):
                batch = batch.slice(0, limit - len(rows))
                columns, sizes = _preview_columns(batch, len(rows), cut_cells)
                ends = np.cumsum(sizes) if len(sizes) else np.zeros(0)
                keep = int(np.searchsorted(ends, budget, side="right"))
                if not rows:
                    keep = max(keep, 1)  # the first row always, whatever its size
                keep = min(keep, batch.num_rows)
                rows.extend(list(row) for row in zip(*(c[:keep] for c in columns), strict=True))
                budget -= int(ends[keep - 1]) if keep else 0
                if keep < batch.num_rows:
                    rows_left_out = True
                    break
                if len(rows) >= limit:
                    break
    kept = len(rows)
    cut_cells = [cell for cell in cut_cells if cell["row"] < kept]
    truncated = {
        "cell_chars": PREVIEW_CELL_CHARS,
        "cells": cut_cells,
        "columns": [name for name in names if any(c["column"] == name for c in cut_cells)],
        "rows": rows_left_out,
    }
    return {"columns": names, "rows": rows, "truncated": truncated}


def _preview_columns(
    batch: pa.RecordBatch, first_row: int, cut_cells: list[dict[str, Any]]
) -> tuple[list[list[Any]], np.ndarray]:
    """JSON values of `batch`'s columns with long cells cut (noted in `cut_cells`), and
    the approximate bytes of each row in the answer."""
    sizes = np.full(batch.num_rows, 8 * max(1, batch.num_columns), dtype=np.int64)
    columns: list[list[Any]] = []
    cuts: list[tuple[int, str, int]] = []
    for index, field in enumerate(batch.schema):
        column: pa.Array = batch.column(index)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        dtype = column.type
        is_text = pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
        is_binary = pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)
        if is_text or is_binary:
            measure = pc.utf8_length(column) if is_text else pc.binary_length(column)
            long = pc.fill_null(pc.greater(measure, PREVIEW_CELL_CHARS), False)
            if pc.any(long).as_py():
                byte_sizes = pc.binary_length(column)
                for position in np.flatnonzero(long.to_numpy(zero_copy_only=False)).tolist():
                    cuts.append((position, field.name, byte_sizes[position].as_py()))
                cut = (
                    pc.utf8_slice_codeunits(column, 0, PREVIEW_CELL_CHARS)
                    if is_text
                    else pc.binary_slice(column, 0, PREVIEW_CELL_CHARS)
                )
                column = cut
            sizes += pc.fill_null(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
            values = _json_column(column)
        elif pa.types.is_nested(dtype):
            values = _json_column(column)
            for line, value in enumerate(values):
                if value is None:
                    continue
                text = json.dumps(value)
                if len(text) > PREVIEW_CELL_CHARS:
                    cuts.append((line, field.name, len(text.encode())))
                    text = values[line] = text[:PREVIEW_CELL_CHARS]
                sizes[line] += len(text)
        else:
            values = _json_column(column)
        columns.append(values)
    for row, name, size in sorted(cuts):
        cut_cells.append({"row": first_row + row, "column": name, "bytes": size})
    return columns, sizes


def aggregate(
    source: Source,
    fn: str,
    column: str | None,
    where: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    group_by: str | None,
    limits: DatasetLimits | None = None,
) -> dict[str, Any]:
    """`fn` of `column` over the rows matching `where`, overall or per `group_by` value.

    Without group_by: ``{"fn", "column", "where", "group_by": None, "rows", "value"}``;
    with it: ``{..., "rows", "groups": [{"key", "value", "rows"}, ...]}`` sorted by key, null
    last. ``rows`` counts the rows matching the filter (per group: the group's rows). A text
    key (or min/max value) longer than `PREVIEW_CELL_CHARS` is cut, and its group (or the
    answer) has ``"truncated": true``.
    """
    with _open(source, limits) as parquet:
        return _aggregate(parquet, fn, column, where, group_by)


def _aggregate(
    parquet: BoundedParquetFile,
    fn: str,
    column: str | None,
    where: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    group_by: str | None,
) -> dict[str, Any]:
    if fn not in FUNCTIONS:
        raise QueryError("fn", f"unknown fn {fn!r}: expected one of {', '.join(FUNCTIONS)}")
    needs_column, hash_fn = FUNCTIONS[fn]
    schema = parquet.schema_arrow
    filters = list(where.items()) if isinstance(where, Mapping) else list(where or ())

    if column is not None:
        column_type = _field_type(schema, column, "column")
        _check_function(fn, column, column_type)
    elif needs_column:
        raise QueryError("column", f"fn {fn!r} needs a column")
    if group_by is not None:
        key_type = _field_type(schema, group_by, "group_by")
        if pa.types.is_nested(key_type) or pa.types.is_null(key_type):
            raise QueryError("group_by", f"cannot group by {group_by!r} of type {key_type}")
    expression = _filter_expression(schema, filters)
    echo = _echo(filters)
    result: dict[str, Any] = {"fn": fn, "column": column, "where": echo, "group_by": group_by}

    if group_by is None and column is None and expression is None:  # the footer knows
        rows = parquet.metadata.num_rows
        return {**result, "rows": rows, "value": rows}

    filter_names = list(dict.fromkeys(name for name, _ in filters))
    if group_by is None and column is None:  # count of the matching rows
        rows = _filtered(parquet, filter_names, filter_names, expression).num_rows
        return {**result, "rows": rows, "value": rows}
    names = [n for n in dict.fromkeys([column, group_by]) if n is not None]
    table = _filtered(parquet, names, filter_names, expression)
    table = _nan_as_null(table)
    if group_by is None:
        assert column is not None
        value = _json_scalar(_scalar_aggregate(fn, _decoded(table.column(column))))
        if isinstance(value, str) and len(value) > PREVIEW_CELL_CHARS:
            value, result["truncated"] = value[:PREVIEW_CELL_CHARS], True
        return {**result, "rows": table.num_rows, "value": value}

    key_name = "__key__"
    grouped = pa.table(
        {
            key_name: _decoded(table.column(group_by)),
            **({"__value__": _decoded(table.column(column))} if column else {}),
        }
    )
    aggregations: list[tuple[Any, ...]] = [([], "count_all")]
    if column is not None:
        options = pc.ScalarAggregateOptions(min_count=0) if fn == "sum" else None
        aggregations.append(("__value__", hash_fn, options) if options else ("__value__", hash_fn))
    out = grouped.group_by(key_name).aggregate(aggregations)
    if out.num_rows > MAX_GROUPS:
        raise QueryError(
            "group_by",
            f"{group_by!r} has {out.num_rows} distinct values here; at most {MAX_GROUPS} groups",
        )
    out = out.sort_by([(key_name, "ascending")])  # nulls go last by default
    values = out.column(f"__value___{hash_fn}") if column else out.column("count_all")
    groups = [
        _group(key, value, rows)
        for key, value, rows in zip(
            _json_column(out.column(key_name)),
            _json_column(values),
            out.column("count_all").to_pylist(),
            strict=True,
        )
    ]
    return {**result, "rows": table.num_rows, "groups": groups}


def _group(key: Any, value: Any, rows: int) -> dict[str, Any]:
    group: dict[str, Any] = {"key": key, "value": value, "rows": rows}
    for name in ("key", "value"):
        if isinstance(group[name], str) and len(group[name]) > PREVIEW_CELL_CHARS:
            group[name] = group[name][:PREVIEW_CELL_CHARS]
            group["truncated"] = True
    return group


# -- sources ------------------------------------------------------------------------------


def _split(source: Source) -> tuple[pafs.FileSystem | None, str]:
    if isinstance(source, tuple):
        filesystem, path = source
        return filesystem, str(path)
    return None, str(source)


def _open(source: Source, limits: DatasetLimits | None) -> contextlib.closing[BoundedParquetFile]:
    filesystem, path = _split(source)
    parquet = BoundedParquetFile(path, limits=limits or DatasetLimits(), filesystem=filesystem)
    return contextlib.closing(parquet)


def _filtered(
    parquet: BoundedParquetFile, names: list[str], filter_names: list[str], expression: Any
) -> pa.Table:
    """Columns `names` of the rows matching `expression`, read batch by batch (bounded)."""
    read = list(dict.fromkeys([*names, *filter_names]))
    schema = pa.schema([parquet.schema_arrow.field(name) for name in names])
    parts: list[pa.Table] = []
    for batch in parquet.iter_batches(columns=read):
        part = pa.Table.from_batches([batch])
        if expression is not None:
            part = part.filter(expression)
        parts.append(part.select(names))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)


# -- validation ---------------------------------------------------------------------------


def _field_type(schema: pa.Schema, name: str, field: str) -> pa.DataType:
    index = schema.get_field_index(name)
    if index < 0:
        known = ", ".join(schema.names[:50]) + (", ..." if len(schema.names) > 50 else "")
        raise QueryError(field, f"unknown column {name!r}; the columns are: {known}")
    dtype = schema.field(index).type
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _is_numeric(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_boolean(dtype)
    )


def _check_function(fn: str, column: str, dtype: pa.DataType) -> None:
    if fn in ("mean", "sum") and not _is_numeric(dtype):
        raise QueryError("column", f"{fn} needs a numeric column; {column!r} is {dtype}")
    if fn in ("min", "max") and not (
        _is_numeric(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_temporal(dtype)
    ):
        raise QueryError("column", f"{fn} needs an orderable column; {column!r} is {dtype}")
    if fn == "nunique" and pa.types.is_nested(dtype):
        raise QueryError("column", f"nunique cannot count values of {column!r} ({dtype})")


def _filter_expression(schema: pa.Schema, filters: Sequence[tuple[str, str]]) -> Any:
    expression = None
    for name, raw in filters:
        dtype = _field_type(schema, name, "where")
        if raw == "":
            term = pc.field(name).is_null()
        else:
            term = pc.field(name) == _cast_value(name, dtype, raw)
        expression = term if expression is None else expression & term
    return expression


def _cast_value(name: str, dtype: pa.DataType, raw: str) -> pa.Scalar:
    text = raw.strip()
    try:
        value: Any
        if pa.types.is_boolean(dtype):
            word = text.lower()
            if word not in TRUE_WORDS and word not in FALSE_WORDS:
                raise ValueError(raw)
            value = word in TRUE_WORDS
        elif pa.types.is_integer(dtype):
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError(raw)
            value = int(text)
        elif pa.types.is_floating(dtype):
            value = float(text)
        elif pa.types.is_decimal(dtype):
            value = Decimal(text)
        elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            value = raw
        elif pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
            value = raw.encode()
        elif pa.types.is_date(dtype):
            value = dt.date.fromisoformat(text)
        elif pa.types.is_timestamp(dtype):
            stamp = dt.datetime.fromisoformat(text)
            if dtype.tz is None and stamp.tzinfo is not None:
                stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
            elif dtype.tz is not None and stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            value = stamp
        elif pa.types.is_time(dtype):
            value = dt.time.fromisoformat(text)
        else:
            raise QueryError(
                "where", f"cannot filter on {name!r}: its type {dtype} is not supported"
            )
        return pa.scalar(value, type=dtype)
    except QueryError:
        raise
    except (ValueError, OverflowError, InvalidOperation, pa.ArrowException):
        raise QueryError(
            "where", f"{raw!r} is not a valid {_type_word(dtype)} for column {name!r} ({dtype})"
        ) from None


def _type_word(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "boolean (true/false/1/0/yes/no)"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_date(dtype):
        return "date (YYYY-MM-DD)"
    if pa.types.is_timestamp(dtype):
        return "timestamp (ISO 8601)"
    if pa.types.is_time(dtype):
        return "time (HH:MM:SS)"
    return "value"


def _echo(filters: Sequence[tuple[str, str]]) -> dict[str, Any]:
    echo: dict[str, Any] = {}
    for name, raw in filters:
        if name not in echo:
            echo[name] = raw
        elif isinstance(echo[name], list):
            echo[name].append(raw)
        else:
            echo[name] = [echo[name], raw]
    return echo


# -- computing ----------------------------------------------------------------------------


def _nan_as_null(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(i)
            if column.null_count < len(column):
                nan = pc.is_nan(column)
                if pc.any(nan).as_py():
                    column = pc.if_else(nan, pa.scalar(None, field.type), column)
                    table = table.set_column(i, field, column)
    return table


def _scalar_aggregate(fn: str, values: pa.ChunkedArray) -> pa.Scalar:
    if fn == "count":
        return pc.count(values)
    if fn == "mean":
        return pc.mean(values)
    if fn == "sum":
        return pc.sum(values, min_count=0)
    if fn == "min":
        return pc.min(values)
    if fn == "max":
        return pc.max(values)
    return pc.count_distinct(values, mode="only_valid")


# -- JSON ---------------------------------------------------------------------------------


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _is_nanoseconds(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(dtype) and dtype.unit == "ns")


def _json_column(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The values of a column as JSON-safe Python values."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if _is_nanoseconds(column.type):
        # Python datetimes stop at microseconds: let Arrow format them.
        return [_iso(text) for text in column.cast(pa.string()).to_pylist()]
    return [_json_value(value) for value in column.to_pylist()]


def _json_scalar(scalar: pa.Scalar) -> Any:
    if not scalar.is_valid:
        return None
    if _is_nanoseconds(scalar.type):
        return _iso(scalar.cast(pa.string()).as_py())
    return _json_value(scalar.as_py())


def _iso(text: str | None) -> str | None:
    """Arrow's "2020-01-01 10:00:00.000000001Z" as ISO 8601 "2020-01-01T10:00:00.000000001Z"."""
    return None if text is None else text.replace(" ", "T", 1)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)
