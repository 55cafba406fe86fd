"""preview() and aggregate() over Parquet files made in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from submitter.datasets.errors import QueryError
from submitter.datasets.query import MAX_GROUPS, aggregate, preview

NAN = float("nan")


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """8 rows, two row groups: every type a filter casts to, nulls and a NaN."""
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
            "sex": pa.array([1, 2, 1, 2, 1, 1, None, 2], pa.int64()),
            "age": pa.array([30.0, 40.0, NAN, 20.0, 50.0, None, 60.0, 10.0], pa.float64()),
            "city": ["Oulu", "Turku", "Oulu", None, "Espoo", "Turku", "Oulu", "Espoo"],
            "member": [True, False, True, True, None, False, True, False],
            "day": pa.array([dt.date(2024, 1, d) for d in (1, 1, 2, 2, 3, 3, 4, 4)]),
            "at": pa.array([dt.datetime(2024, 1, 1, h) for h in range(8)], pa.timestamp("s")),
            "price": pa.array([Decimal(f"{i}.25") for i in range(8)], pa.decimal128(6, 2)),
        }
    )
    path = tmp_path / "people.parquet"
    pq.write_table(table, path, row_group_size=4)
    return path


def agg(
    source: Any, fn: str, column: str | None = None, where: Any = None, group_by: str | None = None
) -> dict[str, Any]:
    result = aggregate(source, fn, column, where or {}, group_by)
    json.dumps(result, allow_nan=False)  # JSON-safe, always
    return result


# -- preview ------------------------------------------------------------------------------


def test_preview_is_json_safe(tmp_path: Path) -> None:
    table = pa.table(
        {
            "f": [1.5, NAN, math.inf, None],
            "ts": pa.array([0, 1, 2, None], pa.timestamp("ns")),
            "tz": pa.array([0, 1, 2, 3], pa.timestamp("s", tz="UTC")),
            "d": pa.array([Decimal("1.10"), None, Decimal("-2"), Decimal("3")]),
            "day": pa.array([dt.date(2024, 5, 6)] * 4),
            "b": pa.array([b"ok", b"\xff", None, b""]),
            "cat": pa.array(["x", "y", "x", None]).dictionary_encode(),
        }
    )
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    result = preview(path, 10)
    json.dumps(result, allow_nan=False)
    assert result["columns"] == ["f", "ts", "tz", "d", "day", "b", "cat"]
    assert [row[0] for row in result["rows"]] == [1.5, None, None, None]
    assert result["rows"][1][1] == "1970-01-01T00:00:00.000000001"
    assert result["rows"][3][1] is None
    assert result["rows"][1][2] == "1970-01-01T00:00:01+00:00"
    assert [row[3] for row in result["rows"]] == [1.1, None, -2.0, 3.0]
    assert result["rows"][0][4] == "2024-05-06"
    assert [row[5] for row in result["rows"]][:2] == ["ok", "/w=="]
    assert [row[6] for row in result["rows"]] == ["x", "y", "x", None]


def test_preview_limits_rows_across_row_groups(people: Path) -> None:
    assert len(preview(people, 6)["rows"]) == 6
    assert [row[0] for row in preview(people, 6)["rows"]] == [1, 2, 3, 4, 5, 6]
    assert len(preview(people, 100)["rows"]) == 8
    empty = preview(people, 0)
    assert (empty["columns"], empty["rows"]) == (preview(people, 1)["columns"], [])
    assert empty["truncated"] == {"cell_chars": 4096, "cells": [], "columns": [], "rows": False}
    with pytest.raises(QueryError) as caught:
        preview(people, -1)
    assert caught.value.field == "limit"


def test_a_filesystem_and_path_pair_is_a_source(people: Path) -> None:
    source = (pafs.SubTreeFileSystem(str(people.parent), pafs.LocalFileSystem()), people.name)
    assert agg(source, "count", where={"sex": "1"})["value"] == 4
    assert preview(source, 2)["rows"][1][0] == 2


# -- aggregate ----------------------------------------------------------------------------


def test_every_fn_without_group_by(people: Path) -> None:
    assert agg(people, "count") == {
        "fn": "count",
        "column": None,
        "where": {},
        "group_by": None,
        "rows": 8,
        "value": 8,
    }
    # NaN counts as missing, like pandas: ages 30, 40, 20, 50, 60, 10.
    assert agg(people, "count", "age")["value"] == 6
    assert agg(people, "mean", "age")["value"] == 35.0
    assert agg(people, "sum", "age")["value"] == 210.0
    assert agg(people, "min", "age")["value"] == 10.0
    assert agg(people, "max", "age")["value"] == 60.0
    assert agg(people, "nunique", "city")["value"] == 3
    assert agg(people, "min", "city")["value"] == "Espoo"
    assert agg(people, "max", "at")["value"] == "2024-01-01T07:00:00"
    assert agg(people, "min", "day")["value"] == "2024-01-01"
    assert agg(people, "sum", "price")["value"] == 30.0
    assert agg(people, "mean", "member")["value"] == 4 / 7
    assert agg(people, "sum", "sex")["value"] == 10


def test_no_matching_rows(people: Path) -> None:
    result = agg(people, "mean", "age", {"city": "Helsinki"})
    assert (result["rows"], result["value"]) == (0, None)
    assert agg(people, "sum", "age", {"city": "Helsinki"})["value"] == 0
    assert agg(people, "count", None, {"city": "Helsinki"})["value"] == 0
    assert agg(people, "max", "city", {"city": "Helsinki"})["value"] is None


@pytest.mark.parametrize(
    ("where", "rows"),
    [
        ({"sex": "1"}, 4),
        ({"sex": " 2 "}, 3),
        ({"age": "40"}, 1),
        ({"age": "4e1"}, 1),
        ({"city": "Oulu"}, 3),
        ({"city": "oulu"}, 0),
        ({"member": "true"}, 4),
        ({"member": "0"}, 3),
        ({"member": "No"}, 3),
        ({"day": "2024-01-02"}, 2),
        ({"at": "2024-01-01T03:00:00"}, 1),
        ({"at": "2024-01-01 03:00:00+00:00"}, 1),
        ({"price": "2.25"}, 1),
        ({"city": ""}, 1),  # an empty value matches null
        ({"sex": ""}, 1),
        ({"sex": "1", "city": "Oulu"}, 2),
        ([("sex", "1"), ("city", "Oulu"), ("member", "true")], 2),
        ([("sex", "1"), ("sex", "2")], 0),
    ],
)
def test_filters_cast_their_values(people: Path, where: Any, rows: int) -> None:
    assert agg(people, "count", None, where)["rows"] == rows
    assert agg(people, "count", "id", where)["value"] == rows


def test_the_filter_is_echoed(people: Path) -> None:
    assert agg(people, "count", None, [("sex", "1"), ("city", "Oulu")])["where"] == {
        "sex": "1",
        "city": "Oulu",
    }
    assert agg(people, "count", None, [("sex", "1"), ("sex", "2")])["where"] == {"sex": ["1", "2"]}


def test_group_by_sorts_keys_with_null_last(people: Path) -> None:
    result = agg(people, "mean", "age", {}, "city")
    assert result["rows"] == 8
    assert result["groups"] == [
        {"key": "Espoo", "value": 30.0, "rows": 2},
        {"key": "Oulu", "value": 45.0, "rows": 3},  # 30, NaN (missing), 60
        {"key": "Turku", "value": 40.0, "rows": 2},  # 40, null
        {"key": None, "value": 20.0, "rows": 1},
    ]


def test_group_by_with_each_fn(people: Path) -> None:
    def values(fn: str, column: str | None, key: str = "sex", where: Any = None) -> list[Any]:
        return [(g["key"], g["value"]) for g in agg(people, fn, column, where, key)["groups"]]

    assert values("count", None) == [(1, 4), (2, 3), (None, 1)]
    assert values("count", "age") == [(1, 2), (2, 3), (None, 1)]
    assert values("sum", "age") == [(1, 80.0), (2, 70.0), (None, 60.0)]
    assert values("min", "city") == [(1, "Espoo"), (2, "Espoo"), (None, "Oulu")]
    assert values("max", "at") == [
        (1, "2024-01-01T05:00:00"),
        (2, "2024-01-01T07:00:00"),
        (None, "2024-01-01T06:00:00"),
    ]
    assert values("nunique", "city") == [(1, 3), (2, 2), (None, 1)]
    assert values("mean", "sex", "sex") == [(1, 1.0), (2, 2.0), (None, None)]
    assert values("count", None, "member", {"sex": "2"}) == [(False, 2), (True, 1)]
    assert values("sum", "age", "day", {"city": "Espoo"}) == [
        ("2024-01-03", 50.0),
        ("2024-01-04", 10.0),
    ]


def test_group_by_a_float_key_treats_nan_as_null(people: Path) -> None:
    groups = agg(people, "count", None, {}, "age")["groups"]
    assert [g["key"] for g in groups] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, None]
    assert groups[-1]["rows"] == 2


def test_too_many_groups_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": range(MAX_GROUPS + 1), "one": [1] * (MAX_GROUPS + 1)}), path)
    assert len(agg(path, "count", None, {"id": "5"}, "id")["groups"]) == 1
    assert len(agg(path, "count", None, {}, "one")["groups"]) == 1
    with pytest.raises(QueryError) as caught:
        aggregate(path, "count", None, {}, "id")
    assert caught.value.field == "group_by"
    assert f"at most {MAX_GROUPS}" in caught.value.reason


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "column", "where", "group_by", "field", "words"),
    [
        ("median", "age", {}, None, "fn", "unknown fn"),
        ("mean", None, {}, None, "column", "needs a column"),
        ("mean", "nope", {}, None, "column", "unknown column 'nope'"),
        ("count", "nope", {}, None, "column", "unknown column"),
        ("mean", "city", {}, None, "column", "numeric"),
        ("sum", "day", {}, None, "column", "numeric"),
        ("count", None, {"nope": "1"}, None, "where", "unknown column 'nope'"),
        ("count", None, {"sex": "x"}, None, "where", "'x' is not a valid integer"),
        ("count", None, {"sex": "1.5"}, None, "where", "integer"),
        ("count", None, {"age": "old"}, None, "where", "number"),
        ("count", None, {"member": "maybe"}, None, "where", "boolean"),
        ("count", None, {"day": "yesterday"}, None, "where", "date"),
        ("count", None, {"at": "noon"}, None, "where", "timestamp"),
        ("count", None, {"price": "cheap"}, None, "where", "number"),
        ("count", None, {}, "nope", "group_by", "unknown column"),
    ],
)
def test_query_errors(
    people: Path,
    fn: str,
    column: str | None,
    where: dict[str, str],
    group_by: str | None,
    field: str,
    words: str,
) -> None:
    with pytest.raises(QueryError) as caught:
        aggregate(people, fn, column, where, group_by)
    assert caught.value.field == field
    assert words in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert isinstance(caught.value, ValueError)
