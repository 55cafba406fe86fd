"""Turn an uploaded CSV or Parquet file on local disk into one Parquet file, streaming.

Memory stays bounded whatever the file size: CSV is read block by block with pyarrow's
streaming reader (`pyarrow.csv.open_csv`) and written row group by row group with a
`ParquetWriter`; Parquet input is re-encoded batch by batch.

CSV rules:

- UTF-8 only (a UTF-8 byte order mark is fine); anything else is refused with the line and
  byte offset of the first bad byte.
- A header row is required: refused if a header field is empty, if two are the same, or if every
  field of the first row is a number (that is data, not a header). A header with no data rows
  is a valid, empty dataset: 0 rows, every column ``string``.
- The delimiter is given, or sniffed from the first 64 KiB among ``,`` ``;`` tab ``|``.
- Every row must have as many fields as the header; the first that does not is refused with its
  1-based physical line number (the header is line 1, blank lines and the extra lines of
  quoted multi-line values count).
- Blank lines are skipped. Empty fields and the usual NA markers (`NA_VALUES`) are null.
- Types are inferred (int64, float64, bool, date32, timestamp[s], string) on the first block
  (`BLOCK_SIZE`); when a later block does not fit a column's type, the conversion restarts
  with that column widened (null -> the value's type, int64 -> float64 -> string, anything
  else -> string), so a valid CSV is never refused for type drift. After `MAX_RETRIES`
  restarts every column is read as text.

Limits (`DatasetLimits`, from the `SUBMITTER_MAX_*_BYTES` settings): what an upload
decodes to is bounded while it streams. Parquet is read through `BoundedParquetFile` (the
footer's sizes checked before a row group is read, text read as dictionaries and measured
before it is decoded); CSV batches are measured as they come. A single CSV row must fit in
one block of the reader: a longer one is retried once with blocks of `cell_bytes` and past
that refused naming `SUBMITTER_MAX_CELL_BYTES`. Column names may not hold NUL characters
(PostgreSQL stores no NUL in text or JSON; the same answer on every backend).

Output: zstd-compressed Parquet, row groups of about `ROW_GROUP_ROWS` rows (and at most
half of `row_group_bytes`, so that our own files pass the readers' limits), written to a
temporary file next to `target` and renamed onto it only on success: a refused upload leaves
no `target` behind.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from submitter.datasets.errors import IngestError
from submitter.datasets.limits import BoundedParquetFile, DatasetLimits, LimitExceeded, Tally
from submitter.datasets.limits import check_batch as check_limits

CSV_EXTENSIONS = frozenset({".csv", ".tsv", ".txt"})
PARQUET_EXTENSIONS = frozenset({".parquet", ".pq"})
PARQUET_MAGIC = b"PAR1"
DELIMITERS = (",", ";", "\t", "|")

#: Read as null (pandas' defaults). Empty fields are null too, in text columns as well.
NA_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
TRUE_VALUES = ("true", "True", "TRUE")
FALSE_VALUES = ("false", "False", "FALSE")

#: CSV bytes per block. pyarrow's streaming reader keeps dozens of blocks in flight, so
#: this sets most of the memory an ingest needs (bench/ingest.py: 1 MiB blocks put the API
#: over 400 MB on a 108 MB file). Types come from a larger sample (SAMPLE_BLOCKS blocks).
BLOCK_SIZE = 256 << 10
SAMPLE_BLOCKS = 4
#: A row group is written when this many rows or bytes are buffered (it is encoded whole
#: in memory: smaller groups, less memory, slightly larger files).
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 48 << 20
#: Restarts for type drift before every column is read as text.
MAX_RETRIES = 12
COMPRESSION = "zstd"

_SNIFF_BYTES = 64 << 10
_SNIFF_MAX_BYTES = 16 << 20
_SNIFF_ROWS = 200
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to ([^:]+): (.*)", re.DOTALL
)


@dataclass(frozen=True)
class IngestResult:
    format: str  # "csv" | "parquet": what was uploaded
    columns: list[dict[str, str]]  # [{"name": ..., "dtype": ...}] of the written Parquet
    row_count: int
    parquet_bytes: int  # size of the written Parquet file
    delimiter: str | None = None  # the CSV delimiter used (given or sniffed)


def ingest(
    source: Path,
    target: Path,
    *,
    filename: str | None = None,
    format: str | None = None,
    delimiter: str | None = None,
    block_size: int = BLOCK_SIZE,
    limits: DatasetLimits | None = None,
) -> IngestResult:
    """Convert `source` (CSV or Parquet) into a Parquet file at `target`.

    The format is `format` (``csv``, ``tsv`` or ``parquet``), else the Parquet magic bytes, else
    the extension of `filename` (or of `source`). Raises `IngestError` (with no `target`
    written) when the file cannot be a dataset; `LimitExceeded` (an `IngestError`) when it
    decodes to more than `limits` allow, before that much is in memory.
    """
    limits = limits or DatasetLimits()
    source, target = Path(source), Path(target)
    size = source.stat().st_size
    if size == 0:
        raise IngestError("the file is empty (0 bytes)", code="empty")
    name = filename or source.name
    kind, default_delimiter = _detect_format(source, size, name, format)
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise IngestError(
            f"the delimiter must be one character other than a quote or newline, not {delimiter!r}",
            code="malformed",
        )
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        if kind == "parquet":
            schema, rows = _parquet_to_parquet(source, temporary, limits)
            used_delimiter = None
        else:
            schema, rows, used_delimiter = _csv_to_parquet(
                source, temporary, delimiter, default_delimiter, block_size, limits
            )
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return IngestResult(
        format=kind,
        columns=[{"name": f.name, "dtype": dtype_name(f.type)} for f in schema],
        row_count=rows,
        parquet_bytes=target.stat().st_size,
        delimiter=used_delimiter,
    )


def dtype_name(dtype: pa.DataType) -> str:
    """A short, stable name for an Arrow type: int64, float64, string, bool, date32, ..."""
    if pa.types.is_dictionary(dtype):
        return dtype_name(dtype.value_type)
    if pa.types.is_floating(dtype):
        return f"float{dtype.bit_width}"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_date32(dtype):
        return "date32"
    if pa.types.is_date64(dtype):
        return "date64"
    return str(dtype)


# -- format -------------------------------------------------------------------------------


def _detect_format(source: Path, size: int, name: str, requested: str | None) -> tuple[str, str]:
    """(``csv`` | ``parquet``, the preferred delimiter if it must be sniffed)."""
    suffix = PurePath(name).suffix.lower()
    preferred = "\t" if suffix == ".tsv" else ","
    if requested:
        wanted = requested.strip().lower()
        if wanted in ("csv", "txt"):
            return "csv", preferred
        if wanted == "tsv":
            return "csv", "\t"
        if wanted in ("parquet", "pq"):
            return "parquet", preferred
        raise IngestError(
            f"unknown format {requested!r}: expected csv, tsv or parquet", code="unknown_format"
        )
    if _has_parquet_magic(source, size):
        return "parquet", preferred
    if suffix in PARQUET_EXTENSIONS:
        return "parquet", preferred
    if suffix in CSV_EXTENSIONS:
        return "csv", preferred
    raise IngestError(
        f"unknown format for {name!r}: not Parquet, and the extension is not .csv, .tsv, .txt, "
        ".parquet or .pq (name the file so, or give the format)",
        code="unknown_format",
    )


def _has_parquet_magic(source: Path, size: int) -> bool:
    if size < 2 * len(PARQUET_MAGIC):
        return False
    with source.open("rb") as file:
        head = file.read(len(PARQUET_MAGIC))
        file.seek(-len(PARQUET_MAGIC), os.SEEK_END)
        tail = file.read(len(PARQUET_MAGIC))
    return head == PARQUET_MAGIC and tail == PARQUET_MAGIC


# -- Parquet ------------------------------------------------------------------------------


def _parquet_to_parquet(source: Path, target: Path, limits: DatasetLimits) -> tuple[pa.Schema, int]:
    def corrupt(error: Exception) -> IngestError:
        return IngestError(f"not a readable Parquet file: {error}", code="corrupt_parquet")

    try:
        parquet = BoundedParquetFile(source, limits=limits)
        schema = parquet.schema_arrow
        expected_rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError, ValueError) as error:
        raise corrupt(error) from None
    with contextlib.closing(parquet):
        _check_names(list(schema.names))
        parquet.check_footer()  # before the writer or any row group
        rows = 0
        with _RowGroupWriter(target, schema, limits) as writer:
            batches = parquet.iter_batches(batch_size=64 * 1024, use_threads=False)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except IngestError:
                    raise
                except (pa.ArrowException, OSError, ValueError) as error:
                    raise corrupt(error) from None
                writer.write(batch)
                rows += batch.num_rows
    if rows != expected_rows:
        raise IngestError(
            f"not a readable Parquet file: the footer says {expected_rows} rows, "
            f"the data has {rows}",
            code="corrupt_parquet",
        )
    return schema, rows


class _RowGroupWriter:
    """A ParquetWriter that buffers batches into row groups of about ROW_GROUP_ROWS rows."""

    def __init__(self, path: Path, schema: pa.Schema, limits: DatasetLimits) -> None:
        self.schema = schema
        self.max_bytes = min(ROW_GROUP_BYTES, limits.row_group_bytes // 2)
        self.writer = pq.ParquetWriter(str(path), schema, compression=COMPRESSION)
        self.buffer: list[pa.RecordBatch] = []
        self.rows = 0
        self.bytes = 0

    def __enter__(self) -> _RowGroupWriter:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self.writer.close()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.buffer.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_batches(self.buffer)
        if table.schema != self.schema:
            table = table.cast(self.schema)
        self.writer.write_table(table, row_group_size=max(self.rows, 1))
        self.buffer, self.rows, self.bytes = [], 0, 0


# -- CSV ----------------------------------------------------------------------------------


class _Straddle(Exception):
    """A CSV row did not fit in one block of the reader."""


class _Widen(Exception):
    """Restart the conversion with `column` read as `dtype`."""

    def __init__(self, column: str, dtype: pa.DataType) -> None:
        super().__init__(column)
        self.column = column
        self.dtype = dtype


def _csv_to_parquet(
    source: Path,
    target: Path,
    delimiter: str | None,
    preferred: str,
    block_size: int,
    limits: DatasetLimits,
) -> tuple[pa.Schema, int, str]:
    sample, whole = _read_sample(source)
    text = _decode_sample(source, sample, whole)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise IngestError(
            "the file is empty: no header row (only blank space or a byte order mark)",
            code="empty",
        )
    if delimiter is None:
        delimiter = sniff_delimiter(text, preferred)
    header = _first_record(text, delimiter)
    _check_header(header)

    def convert(types: dict[str, pa.DataType]) -> tuple[pa.Schema, int]:
        """One conversion; a row longer than a block is retried once with blocks of
        `cell_bytes` (the longest row we take), and refused past that."""
        nonlocal block_size
        while True:
            try:
                return _convert_csv(source, target, delimiter, header, types, block_size, limits)
            except _Straddle:
                if block_size >= limits.cell_bytes:
                    raise LimitExceeded(
                        "SUBMITTER_MAX_CELL_BYTES",
                        limits.cell_bytes,
                        f"a CSV row is longer than {max(block_size, limits.cell_bytes)} bytes",
                    ) from None
                block_size = limits.cell_bytes

    column_types: dict[str, pa.DataType] = {}
    for _ in range(MAX_RETRIES):
        try:
            schema, rows = convert(column_types)
            return schema, rows, delimiter
        except _Widen as widen:
            column_types[widen.column] = widen.dtype
    everything_text = dict.fromkeys(header, pa.string())
    try:
        schema, rows = convert(everything_text)
    except _Widen as widen:  # cannot happen with every column as text
        raise IngestError(f"column {widen.column!r} could not be read", code="malformed") from None
    return schema, rows, delimiter


def _read_sample(source: Path) -> tuple[bytes, bool]:
    """The first 64 KiB (more if the first line is longer) and whether that is the whole file."""
    with source.open("rb") as file:
        sample = file.read(_SNIFF_BYTES)
        while b"\n" not in sample and b"\r" not in sample and len(sample) < _SNIFF_MAX_BYTES:
            more = file.read(_SNIFF_BYTES)
            if not more:
                break
            sample += more
        whole = not file.read(1)
    return sample, whole


def _decode_sample(source: Path, sample: bytes, whole: bool) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(sample, final=whole)  # an incomplete last character is kept back
    except UnicodeDecodeError:
        raise _encoding_error(source) from None


def sniff_delimiter(text: str, preferred: str = ",") -> str:
    """The delimiter among `DELIMITERS` that splits the first rows of `text` most consistently.

    Candidates are scored on the complete lines of the sample by (share of rows with the
    header's field count, the header's field count), so a semicolon inside a comma CSV's text
    column does not win. Ties go to `preferred`, then to the order of `DELIMITERS`; when no
    candidate makes two or more columns the file has one column and `preferred` is returned.
    """
    cut = max(text.rfind("\n"), text.rfind("\r"))
    lines = text[: cut + 1] if cut > 0 else text
    order = [preferred, *(d for d in DELIMITERS if d != preferred)]
    best: tuple[float, int, int] | None = None
    chosen = preferred
    for rank, candidate in enumerate(order):
        counts = _field_counts(lines, candidate)
        if not counts or counts[0] < 2:
            continue
        consistent = sum(1 for count in counts if count == counts[0]) / len(counts)
        score = (consistent, counts[0], -rank)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen


def _field_counts(text: str, delimiter: str) -> list[int]:
    counts: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        for record in reader:
            if record:
                counts.append(len(record))
                if len(counts) >= _SNIFF_ROWS:
                    break
    except csv.Error:
        pass
    return counts


def _first_record(text: str, delimiter: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        for record in reader:
            if record:
                return record
    except csv.Error as error:
        raise IngestError(f"cannot read the header row: {error}", code="no_header") from None
    raise IngestError("the file has no header row", code="no_header")


def _check_header(header: list[str]) -> None:
    if all(not name.strip() for name in header):
        raise IngestError(
            "no header row: the first line has no column names", code="no_header", line=1
        )
    if all(_NUMBER.fullmatch(name.strip()) for name in header):
        shown = ", ".join(repr(name) for name in header[:5]) + (", ..." if len(header) > 5 else "")
        raise IngestError(
            f"no header row: every field of the first line is a number ({shown}); "
            "add a header row with the column names",
            code="no_header",
            line=1,
        )
    _check_names(header)


def _check_names(names: list[str]) -> None:
    if not names:
        raise IngestError("the file has no columns", code="no_header")
    with_nul = [str(i + 1) for i, name in enumerate(names) if "\x00" in name]
    if with_nul:
        raise IngestError(
            f"the name of column{'s' if len(with_nul) > 1 else ''} {', '.join(with_nul)} "
            "holds a NUL character (\\x00), which no backend stores; rename it",
            code="nul",
            line=1,
        )
    empty = [str(i + 1) for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise IngestError(
            f"empty column name in the header: column{'s' if len(empty) > 1 else ''} "
            f"{', '.join(empty)} (every column needs a name)",
            code="empty_column_name",
            line=1,
        )
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i + 1)
    duplicates = {name: where for name, where in positions.items() if len(where) > 1}
    if duplicates:
        listed = "; ".join(
            f"{name!r} (columns {', '.join(map(str, where))})" for name, where in duplicates.items()
        )
        raise IngestError(f"duplicate column names: {listed}", code="duplicate_columns", line=1)


def _convert_csv(
    source: Path,
    target: Path,
    delimiter: str,
    header: list[str],
    column_types: dict[str, pa.DataType],
    block_size: int,
    limits: DatasetLimits,
) -> tuple[pa.Schema, int]:
    invalid: list[Any] = []

    def on_invalid_row(row: Any) -> str:
        invalid.append(row)
        return "error"

    read_options = pacsv.ReadOptions(use_threads=False, block_size=block_size)
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter,
        newlines_in_values=True,
        ignore_empty_lines=True,
        invalid_row_handler=on_invalid_row,
    )
    convert_options = pacsv.ConvertOptions(
        check_utf8=True,
        column_types=column_types,
        null_values=list(NA_VALUES),
        true_values=list(TRUE_VALUES),
        false_values=list(FALSE_VALUES),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    column_types = {
        **_sample_types(source, block_size * SAMPLE_BLOCKS, parse_options, convert_options),
        **column_types,
    }
    convert_options.column_types = column_types
    rows = 0
    names = header
    try:
        with pa.OSFile(str(source)) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            names = list(reader.schema.names)
            schema = _output_schema(source, reader.schema)
            tally = Tally(limits)
            with _RowGroupWriter(target, schema, limits) as writer:
                for batch in _batches(reader):
                    check_limits(batch, limits, tally, rows)
                    writer.write(batch)
                    rows += batch.num_rows
    except pa.ArrowInvalid as error:
        raise _classify(source, delimiter, error, invalid, names, column_types) from None
    except UnicodeDecodeError:  # column names are decoded by Python
        raise _encoding_error(source) from None
    return schema, rows


def _sample_types(
    source: Path,
    size: int,
    parse_options: pacsv.ParseOptions,
    convert_options: pacsv.ConvertOptions,
) -> dict[str, pa.DataType]:
    """Column types inferred from the first `size` bytes (cut at a line end).

    The streaming reader infers from its first block only; a bigger sample makes a type
    drift (and a restart) rarer with small blocks. Any trouble in the sample (a ragged
    row, a quote across the cut) leaves inference to the reader, which reports it properly.
    """
    with source.open("rb") as handle:
        sample = handle.read(size)
        whole = not handle.read(1)
    if not whole:
        cut = sample.rfind(b"\n")
        if cut <= 0:
            return {}
        sample = sample[: cut + 1]
    options = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        newlines_in_values=True,
        ignore_empty_lines=True,
    )
    try:
        table = pacsv.read_csv(
            pa.BufferReader(sample),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=options,
            convert_options=convert_options,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return {}
    return {
        field.name: field.type
        for field in table.schema
        if not pa.types.is_null(field.type) and not pa.types.is_binary(field.type)
    }


def _batches(reader: Any) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def _output_schema(source: Path, inferred: pa.Schema) -> pa.Schema:
    """The inferred schema with all-null columns as string; refuse columns of invalid UTF-8."""
    fields = []
    for field in inferred:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise _encoding_error(source)
        if pa.types.is_null(field.type):
            field = field.with_type(pa.string())
        fields.append(field)
    return pa.schema(fields)


def _classify(
    source: Path,
    delimiter: str,
    error: pa.ArrowInvalid,
    invalid: list[Any],
    names: list[str],
    column_types: dict[str, pa.DataType],
) -> Exception:
    """Turn a failed conversion into an IngestError, or a _Widen to retry with."""
    if invalid:
        row = invalid[0]
        line = _physical_line(source, delimiter, row.number)
        where = f"line {line}" if line is not None else f"row {row.number}"
        text = row.text if len(row.text) <= 200 else row.text[:200] + "..."
        return IngestError(
            f"ragged row at {where}: it has {row.actual_columns} field"
            f"{'s' if row.actual_columns != 1 else ''}, the header has {row.expected_columns} "
            f"({text!r})",
            code="ragged",
            line=line,
        )
    message = str(error)
    if "straddling object" in message:
        return _Straddle(message)
    match = _CONVERSION_ERROR.search(message)
    if match is None:
        return IngestError(f"cannot read the CSV: {message}", code="malformed")
    index, _row, to_type, detail = match.groups()
    if "invalid UTF8" in detail or "\ufffd" in detail:
        located = _find_invalid_utf8(source)
        if located is not None or "invalid UTF8" in detail:
            return _encoding_error(source, located)
    column = names[int(index)] if int(index) < len(names) else None
    value_match = re.fullmatch(r"invalid value '(.*)'", detail.strip(), re.DOTALL)
    if column is None or value_match is None:
        return IngestError(f"cannot read the CSV: {message}", code="malformed")
    current = column_types.get(column)
    current_name = to_type.strip()
    widened = _widen(current_name if current is None else str(current), value_match.group(1))
    if current is not None and widened == current:
        return IngestError(f"cannot read column {column!r}: {message}", code="malformed")
    return _Widen(column, widened)


def _widen(current: str, value: str) -> pa.DataType:
    """The type to read a column as after `value` failed to convert to `current`."""
    value = value.strip()
    if current == "null":
        if _INTEGER.fullmatch(value):
            return pa.int64()
        if _NUMBER.fullmatch(value):
            return pa.float64()
        if value in TRUE_VALUES or value in FALSE_VALUES:
            return pa.bool_()
        return pa.string()
    if current.startswith(("int", "uint")) and _NUMBER.fullmatch(value):
        return pa.float64()
    return pa.string()


def _physical_line(source: Path, delimiter: str, number: int | None) -> int | None:
    """The 1-based physical line where Arrow's row `number` starts.

    Arrow numbers rows from 1 at the header, skipping blank lines and counting a quoted
    multi-line value as one row, so it is the physical line only for simple files. Replay
    the file with Python's csv module (same quoting rules) up to that row.
    """
    if number is None or number < 1:
        return None
    try:
        with source.open(encoding="utf-8-sig", errors="replace", newline="") as file:
            reader = csv.reader(file, delimiter=delimiter, strict=False)
            seen = 0
            before = 0
            for record in reader:
                if record:
                    seen += 1
                    if seen == number:
                        return before + 1
                before = reader.line_num
    except csv.Error:
        return number
    return number


def _find_invalid_utf8(source: Path) -> tuple[int, int, int] | None:
    """(line, byte offset, the byte) of the first byte that is not UTF-8, or None."""
    offset = 0
    line = 1
    carry = b""
    with source.open("rb") as file:
        while True:
            chunk = file.read(1 << 20)
            data = carry + chunk
            if not data:
                return None
            # Decode up to the last newline: it always ends a character.
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0 and chunk:
                carry = data
                continue
            part, carry = data[:cut], data[cut:]
            try:
                part.decode("utf-8")
            except UnicodeDecodeError as error:
                bad = error.start
                return line + part.count(b"\n", 0, bad), offset + bad, part[bad]
            line += part.count(b"\n")
            offset += len(part)
            if not chunk:
                return None


def _encoding_error(source: Path, located: tuple[int, int, int] | None = None) -> IngestError:
    located = located or _find_invalid_utf8(source)
    if located is None:
        return IngestError("the file is not valid UTF-8 text (save it as UTF-8)", code="encoding")
    line, offset, byte = located
    return IngestError(
        f"the file is not valid UTF-8: byte 0x{byte:02X} at line {line} (byte offset {offset}) "
        "is not UTF-8 text; save the file as UTF-8",
        code="encoding",
        line=line,
    )
