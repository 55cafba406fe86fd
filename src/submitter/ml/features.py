"""The feature schema of a model, and validation of prediction input against it.

The schema is recorded at training time and stored with the model, so a prediction request
can be checked *before* it reaches scikit-learn: a missing column, an unknown column or a
string where a number belongs becomes a `SchemaError` that names the field, which the API can
return as a 422 instead of a 500 from deep inside a transformer.

Both training data and validated prediction input are brought to the same "model frame"
dtypes (numbers and booleans as float64 with NaN for missing, strings as object with NaN), so
the saved pipeline always sees what it was fitted on.
"""

from __future__ import annotations

import decimal
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MAX_CATEGORIES = 100
"""How many categories of a string column the schema lists (most frequent first)."""

NUMERIC = ("int64", "float64")
DTYPES = ("int64", "float64", "bool", "string")

Schema = list[dict[str, Any]]


class SchemaError(ValueError):
    """Input does not match the feature schema; `field` says where (e.g. `rows[3].AGE`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --- schema -----------------------------------------------------------------------------------


def feature_schema(
    data: pa.Table | pd.DataFrame,
    target: str | None = None,
    *,
    max_categories: int = MAX_CATEGORIES,
) -> Schema:
    """Describe every column but `target`: name, dtype and (for strings) the categories.

    Dtypes are normalised to int64, float64, bool or string because that is all the pipeline
    distinguishes; anything else (dates, binary, nested) raises `SchemaError` naming the column
    rather than being silently dropped or mangled.
    """
    schema: Schema = []
    for name in data.column_names if isinstance(data, pa.Table) else data.columns:
        if name == target:
            continue
        if isinstance(data, pa.Table):
            column: Any = data.column(name)
            dtype = _arrow_dtype(str(name), column.type)
        else:
            column = data[name]
            dtype = _pandas_dtype(str(name), column)
        entry: dict[str, Any] = {"name": str(name), "dtype": dtype}
        if dtype == "string":
            counts = _category_counts(column)
            entry["categories"] = [str(c) for c in counts.index[:max_categories]]
            entry["n_categories"] = len(counts)
        schema.append(entry)
    return schema


def _category_counts(column: pa.ChunkedArray | pd.Series) -> pd.Series:
    """Non-null values by count, most frequent first (ties in first-seen order)."""
    if isinstance(column, pa.ChunkedArray):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        counts = pc.value_counts(column.drop_null())
        values = counts.field("values").to_pylist()
        return pd.Series(
            counts.field("counts").to_pylist(), index=values, dtype="int64"
        ).sort_values(ascending=False, kind="stable")
    return column.dropna().astype(str).value_counts()


def _arrow_dtype(name: str, typ: pa.DataType) -> str:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_integer(typ):
        return "int64"
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "float64"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or _is_string_view(typ):
        return "string"
    if pa.types.is_null(typ):
        return "float64"  # an all-null column: harmless as a number, imputed away
    raise SchemaError(name, f"unsupported column type {typ}; convert it to a number or a string")


def _is_string_view(typ: pa.DataType) -> bool:
    is_view = getattr(pa.types, "is_string_view", None)
    return bool(is_view and is_view(typ))


def _pandas_dtype(name: str, column: pd.Series) -> str:
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "float64"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        values = column.dropna()
        if isinstance(dtype, pd.CategoricalDtype) or values.map(type).eq(str).all():
            return "string"
        kinds = {_value_kind(v) for v in values}
        if len(kinds) == 1 and kinds <= set(DTYPES):
            return kinds.pop()
        if kinds <= {"int64", "float64"}:
            return "float64"
        raise SchemaError(name, f"value types {sorted(kinds)}; give it one of {list(DTYPES)}")
    raise SchemaError(name, f"unsupported column type {dtype}; convert it to a number or a string")


def _value_kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int64"
    if isinstance(value, numbers.Real | decimal.Decimal):
        return "float64"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


# --- model frames -----------------------------------------------------------------------------


def model_frame(data: pa.Table | pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Training data in the dtypes the pipeline is fitted on (see the module docstring).

    Used for trusted data that was just described by `feature_schema`; prediction input goes
    through `check_rows`, which validates every value and ends in the same dtypes.
    """
    frame = data.to_pandas() if isinstance(data, pa.Table) else data
    out = {}
    for field in schema:
        column = frame[field["name"]]
        if field["dtype"] == "string":
            out[field["name"]] = _string_column(column)
        else:
            out[field["name"]] = _float_column(column)
    return pd.DataFrame(out, index=frame.index)


def _float_column(column: pd.Series) -> pd.Series:
    """Numbers and booleans as float64 with NaN (nullable dtypes and object columns too)."""
    if pd.api.types.is_object_dtype(column.dtype):
        values = [np.nan if pd.isna(v) else float(v) for v in column.tolist()]
        return pd.Series(values, dtype="float64", index=column.index)
    return pd.Series(
        column.to_numpy(dtype="float64", na_value=np.nan), dtype="float64", index=column.index
    )


def _string_column(column: pd.Series) -> pd.Series:
    """Strings as object dtype with NaN for missing (what SimpleImputer and the encoders expect)."""
    missing = column.isna().to_numpy()
    values = [
        np.nan if m else (v if isinstance(v, str) else str(v))
        for v, m in zip(column.tolist(), missing, strict=True)
    ]
    return pd.Series(values, dtype=object, index=column.index)


# --- prediction input -------------------------------------------------------------------------


class _BadValue(Exception):
    pass


def check_rows(schema: Schema, rows: Any, *, allow_extra: bool = False) -> pd.DataFrame:
    """Validate prediction input and return it as a model frame in schema column order.

    `rows` is a list of objects (`[{"AGE": 31, ...}, ...]`), a split table
    (`{"columns": [...], "data": [[...], ...]}`), a pandas DataFrame or a pyarrow Table.
    Nulls are allowed anywhere (the pipeline imputes them) and so are categories never seen in
    training (the encoder tolerates them). A missing column, an unknown column (unless
    `allow_extra`, which drops it) or a value of the wrong type raises `SchemaError` with the
    field: `rows[3].AGE` for a value or key of one row, `AGE` for a column of a table.
    """
    if isinstance(rows, pa.Table):
        rows = rows.to_pandas()
    if isinstance(rows, pd.DataFrame):
        return _check_frame(schema, rows, allow_extra)
    return _frame(schema, check_columns(schema, rows, allow_extra=allow_extra))


def check_columns(schema: Schema, rows: Any, *, allow_extra: bool = False) -> dict[str, list[Any]]:
    """`check_rows` for JSON input, stopping short of the DataFrame: each schema column as a
    list of model-frame values (float or NaN; str or NaN). The compiled model takes these as
    they are, and building a DataFrame costs more than the rest of a 1-row request."""
    if isinstance(rows, Mapping):
        return _check_split(schema, rows, allow_extra)
    if isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        return _check_records(schema, rows, allow_extra)
    raise SchemaError("rows", "expected a list of objects or {'columns': [...], 'data': [...]}")


def _check_records(schema: Schema, rows: Sequence[Any], allow_extra: bool) -> dict[str, list[Any]]:
    if not rows:
        raise SchemaError("rows", "no rows given")
    names = [f["name"] for f in schema]
    known = set(names)
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SchemaError(f"rows[{i}]", f"expected an object, got {_describe(row)}")
        if not allow_extra:
            for key in row:
                if key not in known:
                    raise SchemaError(f"rows[{i}].{key}", "unknown column (not a model feature)")
        for field in schema:
            name = field["name"]
            if name not in row:
                raise SchemaError(f"rows[{i}].{name}", "missing column")
            columns[name].append(_coerce_at(field, row[name], f"rows[{i}].{name}"))
    return columns


def _check_split(
    schema: Schema, table: Mapping[str, Any], allow_extra: bool
) -> dict[str, list[Any]]:
    given, data = table.get("columns"), table.get("data")
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise SchemaError("columns", "expected a list of column names")
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise SchemaError("data", "expected a list of rows")
    if not data:
        raise SchemaError("data", "no rows given")
    positions = _column_positions(schema, [str(c) for c in given], allow_extra)
    columns: dict[str, list[Any]] = {f["name"]: [] for f in schema}
    for i, row in enumerate(data):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != len(given):
            raise SchemaError(f"data[{i}]", f"expected a list of {len(given)} values")
        for field in schema:
            name = field["name"]
            columns[name].append(_coerce_at(field, row[positions[name]], f"data[{i}].{name}"))
    return columns


def _column_positions(schema: Schema, given: list[str], allow_extra: bool) -> dict[str, int]:
    """Map each schema column to its position in `given`; complain about any mismatch."""
    positions: dict[str, int] = {}
    for j, name in enumerate(given):
        if name in positions:
            raise SchemaError(name, "duplicate column")
        positions[name] = j
    names = [f["name"] for f in schema]
    for name in names:
        if name not in positions:
            raise SchemaError(name, "missing column")
    known = set(names)
    if not allow_extra:
        for name in given:
            if name not in known:
                raise SchemaError(name, "unknown column (not a model feature)")
    return positions


def _check_frame(schema: Schema, frame: pd.DataFrame, allow_extra: bool) -> pd.DataFrame:
    """Vectorised where the column already has the right dtype; per value only where not."""
    if len(frame) == 0:
        raise SchemaError("rows", "no rows given")
    positions = _column_positions(schema, [str(c) for c in frame.columns], allow_extra)
    out: dict[str, Any] = {}
    for field in schema:
        name, dtype = field["name"], field["dtype"]
        column = frame.iloc[:, positions[name]]
        if dtype == "string" and isinstance(column.dtype, pd.StringDtype):
            out[name] = _string_column(column)
        elif _fits_numeric(dtype, column):
            out[name] = _float_column(column)
        else:
            values = column.tolist()
            out[name] = [_coerce_at(field, v, f"rows[{i}].{name}") for i, v in enumerate(values)]
    return _frame(schema, out, frame.index)


def _fits_numeric(dtype: str, column: pd.Series) -> bool:
    """Whether a number or bool column already holds only valid values of its dtype."""
    if dtype == "bool" or pd.api.types.is_bool_dtype(column.dtype):
        return dtype == "bool" and pd.api.types.is_bool_dtype(column.dtype)
    if dtype not in NUMERIC:
        return False
    if pd.api.types.is_integer_dtype(column.dtype):
        return True
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(values) | np.isnan(values)
        whole = dtype == "float64" or bool(np.all(np.isnan(values) | (values == np.round(values))))
        return bool(finite.all()) and whole
    return False


def _frame(
    schema: Schema, columns: Mapping[str, Any], index: pd.Index | None = None
) -> pd.DataFrame:
    # dtype=object explicitly: pandas 3 would otherwise infer its own string dtype. NumPy
    # arrays, not one Series per column: for a 1-row prediction that was 10x slower
    # (bench/predict.py: 4.8 ms against 0.5 ms).
    out = {}
    names = []
    for field in schema:
        values = columns[field["name"]]
        if isinstance(values, pd.Series):
            values = values.tolist()
        if field["dtype"] == "string":  # a Series keeps object dtype (pandas 3 infers str)
            out[field["name"]] = pd.Series(values, dtype=object, index=index)
        else:
            out[field["name"]] = np.array(values, dtype="float64")
        names.append(field["name"])
    return pd.DataFrame(out, index=index, columns=pd.Index(names, dtype=object))


def _coerce_at(field: Mapping[str, Any], value: Any, where: str) -> Any:
    try:
        return _coerce(field["dtype"], value)
    except _BadValue as exc:
        raise SchemaError(where, str(exc)) from None


def _coerce(dtype: str, value: Any) -> Any:
    """One value to its model-frame form (float, str or NaN), or `_BadValue` saying why not."""
    if value is None or value is pd.NA or value is pd.NaT:
        return np.nan
    if isinstance(value, float | np.floating) and math.isnan(value):
        return np.nan
    if dtype == "string":
        if isinstance(value, str):
            return value
        raise _BadValue(f"expected a string, got {_describe(value)}")
    if dtype == "bool":
        if isinstance(value, bool | np.bool_):
            return float(value)
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return float(value)
        raise _BadValue(f"expected a boolean, got {_describe(value)}")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | decimal.Decimal):
        raise _BadValue(f"expected a number ({dtype}), got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _BadValue(f"expected a finite number, got {value!r}")
    if dtype == "int64" and not number.is_integer():
        raise _BadValue(f"expected a whole number (int64), got {value!r}")
    return number


def _describe(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string {shown!r}"
    if isinstance(value, bool | np.bool_):
        return f"a boolean {bool(value)!r}"
    if isinstance(value, numbers.Number):
        return f"a number {value!r}"
    return f"a {type(value).__name__}"
