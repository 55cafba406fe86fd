"""Decompression bombs: what a dataset may decode to is bounded while it is read.

The bombs here are small (a few MiB decoded) against lowered limits, so a missing bound
shows as a bomb accepted, not as a machine out of memory; bench/dataset_bomb.py runs the
real 1 GiB one against a server and reports its peak RSS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from submitter.datasets.errors import IngestError
from submitter.datasets.ingest import ingest
from submitter.datasets.limits import BoundedParquetFile, DatasetLimits, LimitExceeded
from submitter.datasets.query import PREVIEW_CELL_CHARS, aggregate, preview

SMALL = DatasetLimits(dataset_bytes=16 << 20, row_group_bytes=1 << 20, cell_bytes=64 << 10)


def _write(path: Path, table: pa.Table, **options: object) -> Path:
    pq.write_table(table, path, compression="zstd", **options)  # type: ignore[arg-type]
    return path


def _refused(source: Path, tmp_path: Path, setting: str, limits: DatasetLimits = SMALL) -> str:
    target = tmp_path / "out.parquet"
    with pytest.raises(LimitExceeded) as caught:
        ingest(source, target, limits=limits)
    assert caught.value.setting == setting
    assert setting in caught.value.reason
    assert caught.value.code == "too_large"
    assert not target.exists()
    assert list(tmp_path.glob(".out.parquet.*")) == []  # no temporary left either
    return caught.value.reason


def test_one_huge_cell_is_refused_from_the_footer(tmp_path: Path) -> None:
    bomb = _write(tmp_path / "bomb.parquet", pa.table({"x": ["A" * (8 << 20)], "n": [1]}))
    assert bomb.stat().st_size < 10_000  # 8 MiB in a few KB
    reason = _refused(bomb, tmp_path, "SUBMITTER_MAX_CELL_BYTES")
    assert "'x'" in reason
    parquet = BoundedParquetFile(str(bomb), limits=SMALL)
    with pytest.raises(LimitExceeded):
        parquet.check_footer()  # before a byte of data is read


def test_a_row_group_over_the_limit_is_refused(tmp_path: Path) -> None:
    table = pa.table({f"c{i}": np.arange(100_000, dtype=np.int64) for i in range(4)})
    source = _write(tmp_path / "wide.parquet", table, row_group_size=100_000)
    reason = _refused(source, tmp_path, "SUBMITTER_MAX_ROW_GROUP_BYTES")
    assert "row group 1" in reason
    assert ingest(source, tmp_path / "ok.parquet").row_count == 100_000  # default limits


def test_a_repeated_value_does_not_expand_past_the_dataset_limit(tmp_path: Path) -> None:
    """Dictionary encoding: 1 KiB x 100,000 rows is 100 MB decoded, a few KB on disk and in
    the footer. Reading text as dictionaries measures it before decoding it."""
    table = pa.table({"s": pa.array(["B" * 1024] * 100_000)})
    source = _write(tmp_path / "dict.parquet", table)
    assert pq.ParquetFile(source).metadata.row_group(0).total_byte_size < 1 << 20
    _refused(source, tmp_path, "SUBMITTER_MAX_DATASET_BYTES")


def test_fixed_width_rows_count_against_the_dataset_limit(tmp_path: Path) -> None:
    """RLE: three million zeros are a few bytes; rows x width is not."""
    table = pa.table({"z": np.zeros(3_000_000, dtype=np.int64)})
    source = _write(tmp_path / "zeros.parquet", table, row_group_size=3_000_000)
    limits = DatasetLimits(dataset_bytes=16 << 20, row_group_bytes=64 << 20, cell_bytes=1024)
    _refused(source, tmp_path, "SUBMITTER_MAX_DATASET_BYTES", limits)


def test_text_read_as_dictionaries_comes_back_as_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    words = ["w" * int(n) for n in rng.integers(0, 2000, 5000)]
    table = pa.table(
        {
            "s": pa.array(words),
            "b": pa.array([w.encode() for w in words], pa.large_binary()),
            "d": pa.array(words).dictionary_encode(),
            "n": np.arange(5000),
            "l": pa.array([[1, 2]] * 5000),
        }
    )
    source = _write(tmp_path / "text.parquet", table, row_group_size=2000)
    limits = DatasetLimits(dataset_bytes=64 << 20, row_group_bytes=16 << 20, cell_bytes=4096)
    parquet = BoundedParquetFile(str(source), limits=limits)
    assert parquet.schema_arrow == pq.ParquetFile(source).schema_arrow
    assert parquet.read().equals(pq.read_table(source))
    assert parquet.read(columns=["n", "s"]).equals(pq.read_table(source, columns=["n", "s"]))
    result = ingest(source, tmp_path / "out.parquet", limits=limits)
    assert result.row_count == 5000
    assert pq.read_table(tmp_path / "out.parquet").equals(pq.read_table(source))


def test_a_long_value_among_short_ones_is_refused_naming_the_row(tmp_path: Path) -> None:
    values = ["short"] * 10 + ["L" * (100 << 10)] + ["short"] * 10
    source = _write(tmp_path / "one-long.parquet", pa.table({"text": values}))
    reason = _refused(source, tmp_path, "SUBMITTER_MAX_CELL_BYTES")
    assert "'text', row 11" in reason


def test_csv_rows_longer_than_a_block_are_read_up_to_the_cell_limit(tmp_path: Path) -> None:
    """pyarrow's CSV reader needs a row inside one block (256 KiB): a longer row is retried
    with blocks of the cell limit, and refused naming it past that."""
    long = tmp_path / "long.csv"
    long.write_bytes(b"a,b\n1,x\n2," + b"y" * (700 << 10) + b"\n3,z\n")
    assert ingest(long, tmp_path / "ok.parquet").row_count == 3
    longer = tmp_path / "longer.csv"
    longer.write_bytes(b"a,b\n1,x\n2," + b"y" * (3 << 20) + b"\n3,z\n")
    _refused(longer, tmp_path, "SUBMITTER_MAX_CELL_BYTES", DatasetLimits())


def test_a_csv_cell_over_the_limit_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "cell.csv"
    source.write_bytes(b"a,b\n1,x\n2," + b"y" * 5000 + b"\n")
    limits = DatasetLimits(cell_bytes=1024)
    assert "'b', row 2" in _refused(source, tmp_path, "SUBMITTER_MAX_CELL_BYTES", limits)


def test_csv_past_the_dataset_limit_is_refused_while_it_streams(tmp_path: Path) -> None:
    source = tmp_path / "many.csv"
    with source.open("wb") as out:
        out.write(b"a,b\n")
        for _ in range(40):
            out.write(b"1,2\n" * 50_000)
    limits = DatasetLimits(dataset_bytes=1 << 20, row_group_bytes=1 << 20)
    _refused(source, tmp_path, "SUBMITTER_MAX_DATASET_BYTES", limits)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_nul_in_a_column_name_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "csv":
        source = tmp_path / "nul.csv"
        source.write_bytes(b"a,b\x00c\n1,2\n")
    else:
        source = _write(tmp_path / "nul.parquet", pa.table({"a": [1], "b\x00c": [2]}))
    with pytest.raises(IngestError) as caught:
        ingest(source, tmp_path / "out.parquet")
    assert caught.value.code == "nul"
    assert "column 2" in caught.value.reason
    assert "\x00" not in caught.value.reason  # the message itself is storable


def test_nul_inside_values_is_data(tmp_path: Path) -> None:
    source = _write(tmp_path / "values.parquet", pa.table({"a": ["x\x00y"]}))
    ingest(source, tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").column("a").to_pylist() == ["x\x00y"]


# -- readers of stored datasets ----------------------------------------------------------


def test_readers_refuse_a_stored_file_over_the_limits(tmp_path: Path) -> None:
    """An older dataset (or an S3 object) written before the limits: never read whole."""
    stored = _write(tmp_path / "old.parquet", pa.table({"x": ["A" * (8 << 20)], "n": [1]}))
    with pytest.raises(LimitExceeded):
        preview(stored, 1, SMALL)
    with pytest.raises(LimitExceeded):
        aggregate(stored, "max", "x", None, None, SMALL)
    with pytest.raises(LimitExceeded):
        BoundedParquetFile(str(stored), limits=SMALL).read()
    with pytest.raises(LimitExceeded):
        next(BoundedParquetFile(str(stored), limits=SMALL).iter_batches())
    # Columns not read do not count.
    assert aggregate(stored, "sum", "n", None, None, SMALL)["value"] == 1


def test_preview_cuts_long_cells_and_says_which(tmp_path: Path) -> None:
    long_text = "é" * 10_000
    table = pa.table(
        {
            "id": [1, 2, 3],
            "text": ["short", long_text, None],
            "blob": [b"x", b"y", b"z" * 9000],
            "items": [[1], list(range(3000)), None],
        }
    )
    source = _write(tmp_path / "long.parquet", table)
    result = preview(source, 10)
    assert len(result["rows"]) == 3
    text = result["rows"][1][1]
    assert text == "é" * PREVIEW_CELL_CHARS
    assert result["rows"][0][1] == "short"
    truncated = result["truncated"]
    assert truncated["cell_chars"] == PREVIEW_CELL_CHARS
    assert {"row": 1, "column": "text", "bytes": 20_000} in truncated["cells"]
    assert {"row": 2, "column": "blob", "bytes": 9000} in truncated["cells"]
    assert any(c["row"] == 1 and c["column"] == "items" for c in truncated["cells"])
    assert truncated["columns"] == ["text", "blob", "items"]
    assert truncated["rows"] is False


def test_preview_stops_adding_rows_past_its_byte_budget(tmp_path: Path) -> None:
    table = pa.table({"text": ["t" * 4000] * 1000, "c2": ["u" * 4000] * 1000})
    source = _write(tmp_path / "wide.parquet", table)
    result = preview(source, 1000)
    assert 0 < len(result["rows"]) < 1000
    assert result["truncated"]["rows"] is True
    assert sum(len(a) + len(b) for a, b in result["rows"]) <= 4 << 20


def test_aggregate_cuts_long_group_keys(tmp_path: Path) -> None:
    source = _write(tmp_path / "keys.parquet", pa.table({"k": ["k" * 10_000, "short"]}))
    groups = aggregate(source, "count", None, None, "k")["groups"]
    assert {"key": "short", "value": 1, "rows": 1} in groups
    cut = next(g for g in groups if g["key"] != "short")
    assert cut["truncated"] is True and len(cut["key"]) == PREVIEW_CELL_CHARS
