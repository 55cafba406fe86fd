"""ingest(): CSV and Parquet uploads into Parquet, and every refusal (with no target left)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from submitter.datasets.errors import IngestError
from submitter.datasets.ingest import NA_VALUES, ingest, sniff_delimiter
from submitter.datasets.query import aggregate

CREDIT = Path(__file__).resolve().parents[1] / "data" / "credit.csv"
SMALL_BLOCK = 4096


def run(tmp_path: Path, content: bytes, filename: str = "data.csv", **kwargs: Any) -> Any:
    source = tmp_path / "upload"
    source.write_bytes(content)
    target = tmp_path / "out" / "data.parquet"
    target.parent.mkdir(exist_ok=True)
    result = ingest(source, target, filename=filename, **kwargs)
    assert result.parquet_bytes == target.stat().st_size
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.parquet"]
    return result, pq.read_table(target)


def refused(
    tmp_path: Path, content: bytes, filename: str = "data.csv", **kwargs: Any
) -> IngestError:
    source = tmp_path / "upload"
    source.write_bytes(content)
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    with pytest.raises(IngestError) as caught:
        ingest(source, out / "data.parquet", filename=filename, **kwargs)
    assert list(out.iterdir()) == [], "a refused upload must leave nothing behind"
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == caught.value.reason
    return caught.value


def dtypes(result: Any) -> dict[str, str]:
    return {c["name"]: c["dtype"] for c in result.columns}


# -- CSV ----------------------------------------------------------------------------------


def test_csv_types_values_and_result(tmp_path: Path) -> None:
    content = (
        b"id,name,score,ok,day,at\n"
        b"1,ann,1.5,true,2024-01-02,2024-01-02 10:00:00\n"
        b'2,"bob, jr.",2.5,false,2024-02-03,2024-02-03T11:30:00\n'
    )
    result, table = run(tmp_path, content)
    assert result.format == "csv"
    assert result.delimiter == ","
    assert result.row_count == 2
    assert dtypes(result) == {
        "id": "int64",
        "name": "string",
        "score": "float64",
        "ok": "bool",
        "day": "date32",
        "at": "timestamp[s]",
    }
    assert table.to_pylist()[1] == {
        "id": 2,
        "name": "bob, jr.",
        "score": 2.5,
        "ok": False,
        "day": dt.date(2024, 2, 3),
        "at": dt.datetime(2024, 2, 3, 11, 30),
    }


@pytest.mark.parametrize(
    ("delimiter", "filename"), [(";", "a.csv"), ("\t", "a.tsv"), ("\t", "a.txt"), ("|", "a.csv")]
)
def test_the_delimiter_is_sniffed(tmp_path: Path, delimiter: str, filename: str) -> None:
    rows = [["a", "b", "c"], ["1", "x,y", "2.5"], ["2", "z", "3.5"]]
    content = "".join(delimiter.join(row) + "\n" for row in rows).encode()
    result, table = run(tmp_path, content, filename)
    assert result.delimiter == delimiter
    assert table.column_names == ["a", "b", "c"]
    assert table.column("b").to_pylist() == ["x,y", "z"]


def test_sniffing_prefers_the_consistent_delimiter() -> None:
    # Commas inside a semicolon file's values (decimal commas), and the other way round.
    assert sniff_delimiter("a;b;c\n1,5;2,25;x\n3;4;y\n") == ";"
    assert sniff_delimiter("a,b,c\nx;y,2,3\nz,4,5\n") == ","
    assert sniff_delimiter("only\n1\n2\n") == ","
    assert sniff_delimiter("only\n1\n", preferred="\t") == "\t"


def test_a_given_delimiter_wins(tmp_path: Path) -> None:
    result, table = run(tmp_path, b"a;b,c\n1;2,3\n", delimiter=",")
    assert table.column_names == ["a;b", "c"]
    assert result.delimiter == ","
    error = refused(tmp_path, b"a,b\n1,2\n", delimiter=";;")
    assert "delimiter" in error.reason


def test_bom_crlf_quotes_and_blank_lines(tmp_path: Path) -> None:
    content = b'\xef\xbb\xbfname,note\r\n\r\nann,"two\r\nlines"\r\nbob,"say ""hi"""\r\n\r\n'
    result, table = run(tmp_path, content)
    assert result.row_count == 2
    assert table.column_names == ["name", "note"]  # no BOM in the first name
    assert table.to_pylist() == [
        {"name": "ann", "note": "two\r\nlines"},
        {"name": "bob", "note": 'say "hi"'},
    ]


def test_na_markers_and_empty_fields_are_null(tmp_path: Path) -> None:
    content = b"n,s,f\n1,x,1.5\n,,\nNA,NULL,NaN\nnan,N/A,null\n4,None,#N/A\n"
    result, table = run(tmp_path, content)
    assert dtypes(result) == {"n": "int64", "s": "string", "f": "float64"}
    assert table.column("n").to_pylist() == [1, None, None, None, 4]
    assert table.column("s").to_pylist() == ["x", None, None, None, None]
    assert table.column("f").to_pylist() == [1.5, None, None, None, None]
    assert "" in NA_VALUES


def test_header_only_is_an_empty_dataset_of_text_columns(tmp_path: Path) -> None:
    result, table = run(tmp_path, b"a,b\n")
    assert result.row_count == 0
    assert dtypes(result) == {"a": "string", "b": "string"}
    assert table.num_rows == 0


def test_all_empty_column_is_string(tmp_path: Path) -> None:
    result, table = run(tmp_path, b"a,b\n1,\n2,\n")
    assert dtypes(result) == {"a": "int64", "b": "string"}
    assert table.column("b").to_pylist() == [None, None]


def test_type_drift_after_the_first_block_widens_the_column(tmp_path: Path) -> None:
    n = 2000  # ~30 KB: many blocks of SMALL_BLOCK bytes
    lines = ["i,to_float,to_text,flag,stamp,sparse,stays"]
    for i in range(n):
        lines.append(
            f"{i},{i},{i},{'true' if i % 2 else 'false'},2024-01-01 00:00:{i % 60:02d},,{i}"
        )
    lines.append(f"{n},2.5,007x,maybe,soon,12,{n}")
    lines.append(f"{n + 1},3,0042,true,2024-01-01 00:00:00,3.5,{n + 1}")
    content = ("\n".join(lines) + "\n").encode()
    assert len(content) > 5 * SMALL_BLOCK
    result, table = run(tmp_path, content, block_size=SMALL_BLOCK)
    assert result.row_count == n + 2
    assert dtypes(result) == {
        "i": "int64",
        "to_float": "float64",
        "to_text": "string",
        "flag": "string",
        "stamp": "string",
        "sparse": "float64",
        "stays": "int64",
    }
    tail = table.slice(n - 1).to_pylist()
    assert tail[0]["to_text"] == str(n - 1)  # the text as written, not a re-formatted number
    assert tail[1] == {
        "i": n,
        "to_float": 2.5,
        "to_text": "007x",
        "flag": "maybe",
        "stamp": "soon",
        "sparse": 12.0,
        "stays": n,
    }
    assert tail[2]["to_text"] == "0042"
    assert tail[2]["sparse"] == 3.5
    assert table.column("sparse").null_count == n


def test_drift_in_many_columns_still_converts(tmp_path: Path) -> None:
    columns = 20
    header = ",".join(f"c{j}" for j in range(columns))
    body = [",".join(str(i) for _ in range(columns)) for i in range(1500)]
    body.append(",".join("x" for _ in range(columns)))  # every column drifts at once
    content = ("\n".join([header, *body]) + "\n").encode()
    result, table = run(tmp_path, content, block_size=SMALL_BLOCK)
    assert set(dtypes(result).values()) == {"string"}
    assert table.column("c7").to_pylist()[-2:] == ["1499", "x"]


# -- refusals -----------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    error = refused(tmp_path, b"")
    assert error.code == "empty"
    assert "empty" in error.reason
    for blank in (b"\xef\xbb\xbf", b"\n\n  \n"):
        assert refused(tmp_path, blank).code == "empty"


@pytest.mark.parametrize("content", [b"1,2,3\n4,5,6\n", b"1.5;-2;3e4\n1;2;3\n", b"2019\n2020\n"])
def test_no_header_when_the_first_row_is_numbers(tmp_path: Path, content: bytes) -> None:
    error = refused(tmp_path, content)
    assert error.code == "no_header"
    assert "header" in error.reason


def test_no_header_when_the_header_is_empty(tmp_path: Path) -> None:
    error = refused(tmp_path, b",,\n1,2,3\n")
    assert error.code == "no_header"


def test_empty_column_names_are_named_by_position(tmp_path: Path) -> None:
    error = refused(tmp_path, b",a,,b\n1,2,3,4\n")
    assert error.code == "empty_column_name"
    assert "columns 1, 3" in error.reason


def test_duplicate_column_names_are_named(tmp_path: Path) -> None:
    error = refused(tmp_path, b"a,b,a,c,b\n1,2,3,4,5\n")
    assert error.code == "duplicate_columns"
    assert "'a' (columns 1, 3)" in error.reason
    assert "'b' (columns 2, 5)" in error.reason
    assert "'c'" not in error.reason


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"a,b\n1,2\n3,4,5\n6,7\n", 3),  # the header is line 1
        (b"a,b\n1,2\n3\n", 3),  # too few fields
        (b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n5,6,7\r\n", 4),
        (b"a,b\n1,2\n\n\n3,4,5\n", 5),  # blank lines count as lines
        (b'a,b\n1,"x\ny\nz"\n2,3\n4\n', 6),  # so do the lines of a quoted value
        (b"\n\na,b\n1,2\n1,2,3\n", 5),  # and blank lines before the header
    ],
)
def test_ragged_rows_name_the_physical_line(tmp_path: Path, content: bytes, line: int) -> None:
    error = refused(tmp_path, content)
    assert error.code == "ragged"
    assert error.line == line
    assert f"line {line}" in error.reason


def test_ragged_row_far_past_the_first_block(tmp_path: Path) -> None:
    lines = ["a,b,c"] + [f"{i},{i},x" for i in range(3000)]
    lines[2500] = "1,2"  # physical line 2501
    content = ("\n".join(lines) + "\n").encode()
    error = refused(tmp_path, content, block_size=SMALL_BLOCK)
    assert error.line == 2501
    assert "line 2501" in error.reason
    assert "2 fields" in error.reason
    assert "'1,2'" in error.reason


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"a,b\n1,caf\xe9\n", 2),  # invalid in the first block (pyarrow would say: binary)
        (b"a,\xe9\n1,2\n", 1),  # in the header
        (b"a,b\n" + b"1,xy\n" * 2000 + b"2,caf\xe9\n", 2002),  # past the first block
        (b"a,b\n" + b"1,2\n" * 2000 + b"caf\xe9,2\n", 2002),  # in a numeric column
    ],
)
def test_non_utf8_is_refused_with_the_line(tmp_path: Path, content: bytes, line: int) -> None:
    error = refused(tmp_path, content, block_size=SMALL_BLOCK)
    assert error.code == "encoding"
    assert "UTF-8" in error.reason
    assert f"line {line}" in error.reason
    assert "0xE9" in error.reason


@pytest.mark.parametrize(
    ("content", "filename", "given"),
    [
        (b"a,b\n1,2\n", "data.xlsx", None),
        (b"a,b\n1,2\n", "data", None),
        (b"\x00\x01garbage", "data.bin", None),
        (b"a,b\n1,2\n", "data.csv", "xlsx"),
    ],
)
def test_unknown_format(tmp_path: Path, content: bytes, filename: str, given: str | None) -> None:
    error = refused(tmp_path, content, filename, format=given)
    assert error.code == "unknown_format"
    assert "format" in error.reason


def test_format_overrides_the_extension(tmp_path: Path) -> None:
    result, table = run(tmp_path, b"a\tb\n1\t2\n", "export.dat", format="tsv")
    assert result.format == "csv"
    assert table.column_names == ["a", "b"]


# -- Parquet ------------------------------------------------------------------------------


def parquet_bytes(table: pa.Table, tmp_path: Path, **kwargs: Any) -> bytes:
    path = tmp_path / "made.parquet"
    pq.write_table(table, path, **kwargs)
    return path.read_bytes()


def test_parquet_round_trip(tmp_path: Path) -> None:
    table = pa.table(
        {
            "i": pa.array(range(1000), pa.int32()),
            "s": [f"v{i % 7}" if i % 5 else None for i in range(1000)],
            "f": [i / 3 for i in range(1000)],
            "t": pa.array(range(1000), pa.timestamp("ms")),
        }
    )
    content = parquet_bytes(table, tmp_path, row_group_size=100, compression="snappy")
    result, back = run(tmp_path, content, "upload.parquet")
    assert result.format == "parquet"
    assert result.row_count == 1000
    assert result.delimiter is None
    assert dtypes(result) == {"i": "int32", "s": "string", "f": "float64", "t": "timestamp[ms]"}
    assert back.equals(table)


def test_parquet_is_recognised_by_its_magic_whatever_the_name(tmp_path: Path) -> None:
    content = parquet_bytes(pa.table({"a": [1, 2]}), tmp_path)
    for name in ("upload", "upload.csv", "upload.bin"):
        result, back = run(tmp_path, content, name)
        assert result.format == "parquet"
        assert back.column("a").to_pylist() == [1, 2]


def test_parquet_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    schema = pa.schema([("a", pa.int64()), ("a", pa.int64())])
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], schema=schema)
    error = refused(tmp_path, parquet_bytes(table, tmp_path), "x.parquet")
    assert error.code == "duplicate_columns"


@pytest.mark.parametrize("damage", ["magic", "footer", "truncated", "pages"])
def test_corrupt_parquet(tmp_path: Path, damage: str) -> None:
    good = parquet_bytes(
        pa.table({"a": list(range(10_000)), "b": [str(i) for i in range(10_000)]}),
        tmp_path,
        compression="zstd",
    )
    if damage == "magic":
        content = b"PAR1 this is not really parquet PAR1"
    elif damage == "footer":
        content = good[:-12] + b"\xff" * 8 + good[-4:]
    elif damage == "truncated":
        content = good[: len(good) // 2]
    else:  # scribble over the data pages, keep the footer
        middle = len(good) // 3
        content = good[:middle] + b"\xff" * 4000 + good[middle + 4000 :]
    error = refused(tmp_path, content, "broken.parquet")
    assert error.code == "corrupt_parquet"
    assert "Parquet" in error.reason


# -- real data ----------------------------------------------------------------------------


def test_credit_csv(tmp_path: Path) -> None:
    target = tmp_path / "credit.parquet"
    result = ingest(CREDIT, target)
    assert result.row_count == 24_000
    assert {"name": "AGE", "dtype": "int64"} in result.columns
    answer = aggregate(target, "mean", "AGE", {"SEX": "1"}, None)
    assert answer["rows"] == 9_578
    assert round(answer["value"], 3) == 36.589
