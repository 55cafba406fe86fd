"""Preview and aggregate a Parquet dataset with pyarrow, reading only the columns needed.

A source is a local path or a ``(pyarrow.fs.FileSystem, path)`` pair (S3). Results are
JSON-safe: NaN and infinities become None, dates and times ISO strings, decimals floats.

Filters are equalities ANDed together; their values arrive as text (``where=SEX:1``) and are
cast to the column's type. An empty value matches null. In float columns NaN is treated as
missing, as pandas does: it is not counted and does not poison a mean.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from os import PathLike
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from submitter.datasets.errors import QueryError

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
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


def preview(source: Source, limit: int) -> dict[str, Any]:
    """The first `limit` rows: ``{"columns": [names], "rows": [[values], ...]}``."""
    if limit < 0:
        raise QueryError("limit", f"must be 0 or more, not {limit}")
    with _open(source) as stream:
        parquet = pq.ParquetFile(stream)
        names = list(parquet.schema_arrow.names)
        batches: list[pa.RecordBatch] = []
        taken = 0
        if limit > 0:
            for batch in parquet.iter_batches(batch_size=min(limit, 64 * 1024)):
                batches.append(batch.slice(0, limit - taken))
                taken += batches[-1].num_rows
                if taken >= limit:
                    break
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    columns = [_json_column(table.column(i)) for i in range(table.num_columns)]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return {"columns": names, "rows": rows}


def aggregate(
    source: Source,
    fn: str,
    column: str | None,
    where: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    group_by: str | None,
) -> dict[str, Any]:
    """`fn` of `column` over the rows matching `where`, overall or per `group_by` value.

    Without group_by: ``{"fn", "column", "where", "group_by": None, "rows", "value"}``;
    with it: ``{..., "rows", "groups": [{"key", "value", "rows"}, ...]}`` sorted by key, null
    last. ``rows`` counts the rows matching the filter (per group: the group's rows).
    """
    if fn not in FUNCTIONS:
        raise QueryError("fn", f"unknown fn {fn!r}: expected one of {', '.join(FUNCTIONS)}")
    needs_column, hash_fn = FUNCTIONS[fn]
    dataset = _dataset(source)
    schema = dataset.schema
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

    if group_by is None and column is None:  # count of rows: no column to read
        rows = dataset.count_rows(filter=expression)
        return {**result, "rows": rows, "value": rows}

    names = [n for n in dict.fromkeys([column, group_by]) if n is not None]
    table = dataset.to_table(columns=names, filter=expression)
    table = _nan_as_null(table)
    if group_by is None:
        assert column is not None
        value = _scalar_aggregate(fn, _decoded(table.column(column)))
        return {**result, "rows": table.num_rows, "value": _json_scalar(value)}

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
        {"key": key, "value": value, "rows": rows}
        for key, value, rows in zip(
            _json_column(out.column(key_name)),
            _json_column(values),
            out.column("count_all").to_pylist(),
            strict=True,
        )
    ]
    return {**result, "rows": table.num_rows, "groups": groups}


# -- sources ------------------------------------------------------------------------------


def _split(source: Source) -> tuple[pafs.FileSystem | None, str]:
    if isinstance(source, tuple):
        filesystem, path = source
        return filesystem, str(path)
    return None, str(source)


def _open(source: Source) -> Any:
    filesystem, path = _split(source)
    if filesystem is None:
        return pa.OSFile(path)
    return filesystem.open_input_file(path)


def _dataset(source: Source) -> ds.Dataset:
    filesystem, path = _split(source)
    return ds.dataset(path, format="parquet", filesystem=filesystem)


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
