"""Feature schema and validation of prediction input: every rejection names its field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from submitter.ml.features import SchemaError, check_rows, feature_schema, model_frame
from tests.ml import data

SCHEMA: list[dict[str, Any]] = [
    {"name": "AGE", "dtype": "int64"},
    {"name": "INCOME", "dtype": "float64"},
    {"name": "MEMBER", "dtype": "bool"},
    {"name": "CITY", "dtype": "string", "categories": ["Oulu", "Turku"], "n_categories": 2},
]
ROW = {"AGE": 30, "INCOME": 1234.5, "MEMBER": True, "CITY": "Oulu"}


def rows(n: int = 5) -> list[dict]:
    return [dict(ROW) for _ in range(n)]


def test_schema_from_dataframe_excludes_target_and_lists_categories() -> None:
    frame = data.binary()
    schema = feature_schema(frame, "label")
    assert [(f["name"], f["dtype"]) for f in schema] == [
        ("x1", "float64"),
        ("x2", "float64"),
        ("age", "int64"),
        ("member", "bool"),
        ("color", "string"),
    ]
    color = schema[-1]
    assert sorted(color["categories"]) == sorted(data.COLORS)
    assert color["n_categories"] == 4
    assert "categories" not in schema[0]


def test_schema_from_arrow_keeps_integer_type_despite_nulls() -> None:
    table = pa.table(
        {
            "n": pa.array([1, None, 3], pa.int32()),
            "s": pa.array(["a", "b", None]).dictionary_encode(),
            "b": pa.array([True, None, False]),
            "t": pa.array([1, 2, 3]),
        }
    )
    schema = feature_schema(table, "t")
    assert [(f["name"], f["dtype"]) for f in schema] == [
        ("n", "int64"),
        ("s", "string"),
        ("b", "bool"),
    ]
    frame = model_frame(table, schema)
    assert frame["n"].dtype == "float64" and np.isnan(frame["n"][1])
    assert frame["s"].dtype == object and frame["s"].tolist()[:2] == ["a", "b"]
    assert frame["b"].tolist()[::2] == [1.0, 0.0]


def test_schema_caps_categories_most_frequent_first() -> None:
    frame = pd.DataFrame({"s": ["common"] * 5 + [f"rare{i}" for i in range(10)]})
    (field,) = feature_schema(frame, max_categories=3)
    assert field["categories"][0] == "common"
    assert len(field["categories"]) == 3
    assert field["n_categories"] == 11


def test_unsupported_column_type_names_the_column() -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01"]), "y": [1]})
    with pytest.raises(SchemaError) as err:
        feature_schema(frame, "y")
    assert err.value.field == "when"


def test_valid_rows_become_a_model_frame_with_nulls_and_unknown_categories() -> None:
    given = rows(3)
    given[1] = {"AGE": None, "INCOME": float("nan"), "MEMBER": None, "CITY": None}
    given[2]["CITY"] = "Tampere"  # never seen in training: allowed
    frame = check_rows(SCHEMA, given)
    assert list(frame.columns) == ["AGE", "INCOME", "MEMBER", "CITY"]
    assert [str(t) for t in frame.dtypes] == ["float64", "float64", "float64", "object"]
    assert frame.isna().iloc[1].all()
    assert frame["CITY"].tolist()[::2] == ["Oulu", "Tampere"]
    assert frame["MEMBER"][0] == 1.0


def test_extra_columns_may_be_dropped_on_request() -> None:
    given = [{**ROW, "EXTRA": 1}]
    assert list(check_rows(SCHEMA, given, allow_extra=True).columns) == [f["name"] for f in SCHEMA]


@pytest.mark.parametrize(
    ("index", "change", "field", "reason"),
    [
        (3, {"AGE": "abc"}, "rows[3].AGE", "expected a number"),
        (1, {"INCOME": True}, "rows[1].INCOME", "expected a number"),
        (0, {"AGE": 2.5}, "rows[0].AGE", "whole number"),
        (2, {"INCOME": float("inf")}, "rows[2].INCOME", "finite"),
        (4, {"MEMBER": "yes"}, "rows[4].MEMBER", "expected a boolean"),
        (2, {"CITY": 12}, "rows[2].CITY", "expected a string"),
        (1, {"EXTRA": 5}, "rows[1].EXTRA", "unknown column"),
    ],
)
def test_bad_record_values_name_the_field(
    index: int, change: dict, field: str, reason: str
) -> None:
    given = rows()
    given[index].update(change)
    with pytest.raises(SchemaError) as err:
        check_rows(SCHEMA, given)
    assert err.value.field == field
    assert reason in err.value.reason
    assert isinstance(err.value, ValueError)


def test_missing_key_in_a_record_names_row_and_column() -> None:
    given = rows()
    del given[2]["INCOME"]
    with pytest.raises(SchemaError) as err:
        check_rows(SCHEMA, given)
    assert (err.value.field, err.value.reason) == ("rows[2].INCOME", "missing column")


def test_non_object_row_and_empty_input_are_refused() -> None:
    with pytest.raises(SchemaError) as err:
        check_rows(SCHEMA, [ROW, [1, 2]])
    assert err.value.field == "rows[1]"
    with pytest.raises(SchemaError):
        check_rows(SCHEMA, [])
    with pytest.raises(SchemaError):
        check_rows(SCHEMA, "AGE=3")


def split(columns: list[str], data_rows: list[list]) -> dict:
    return {"columns": columns, "data": data_rows}


def test_split_format_checks_columns_then_values() -> None:
    names = ["CITY", "AGE", "INCOME", "MEMBER"]  # any order
    frame = check_rows(SCHEMA, split(names, [["Oulu", 3, 1.0, False], [None, None, None, None]]))
    assert frame["AGE"].tolist()[0] == 3.0 and frame.shape == (2, 4)

    cases = [
        (split(["AGE", "INCOME", "MEMBER"], [[1, 2, True]]), "CITY", "missing column"),
        (split([*names, "EXTRA"], [["Oulu", 3, 1.0, False, 0]]), "EXTRA", "unknown column"),
        (split([*names, "AGE"], [["Oulu", 3, 1.0, False, 3]]), "AGE", "duplicate column"),
        (split(names, [["Oulu", 3, 1.0, False], ["Oulu", 3]]), "data[1]", "4 values"),
        (split(names, [["Oulu", "abc", 1.0, False]]), "data[0].AGE", "expected a number"),
    ]
    for given, field, reason in cases:
        with pytest.raises(SchemaError) as err:
            check_rows(SCHEMA, given)
        assert err.value.field == field
        assert reason in err.value.reason


def test_dataframe_and_arrow_input() -> None:
    frame = pd.DataFrame([ROW, {**ROW, "AGE": None}])
    out = check_rows(SCHEMA, frame)
    assert out["AGE"].tolist()[0] == 30.0 and np.isnan(out["AGE"][1])
    assert check_rows(SCHEMA, pa.Table.from_pandas(frame)).shape == (2, 4)

    wrong = pd.DataFrame([ROW, ROW, {**ROW, "AGE": "abc"}])
    with pytest.raises(SchemaError) as err:
        check_rows(SCHEMA, wrong)
    assert err.value.field == "rows[2].AGE"

    with pytest.raises(SchemaError) as err:
        check_rows(SCHEMA, frame.drop(columns=["CITY"]))
    assert (err.value.field, err.value.reason) == ("CITY", "missing column")
