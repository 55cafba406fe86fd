"""Bounds on what a dataset may decompress to, enforced while reading, before memory grows.

A Parquet file is compressed twice over: by its codec (zstd, gzip, ...) and by its
encodings (a dictionary page holds each distinct value once, RLE stores a run of equal
values in a few bytes). A 33 KB file can hold one 1 GiB cell, or a 1 KiB string repeated
a million times; reading either naively costs gigabytes. So every read of a dataset, the
ingest of an upload as well as preview, aggregate, describe, train and predict over stored
ones, goes through `BoundedParquetFile`:

1. Before any data is read, the footer is checked: the uncompressed size of each row group
   (of the columns read) against `row_group_bytes`, the sum against `dataset_bytes`, and the
   rows times the fixed width of the columns against `dataset_bytes` (RLE hides no bytes
   from that product).
2. Text and binary columns are read as dictionaries, so a repeated value stays one value
   in memory. Each batch's decoded size is computed from the value lengths (cheap, no
   decoding) and checked, per cell against `cell_bytes` and in total against
   `dataset_bytes`, and only then decoded, in slices of at most `DECODE_BYTES`.
3. Batches are at most `DECODE_BYTES` wide in their fixed-width columns, so a file with
   thousands of columns does not decode a huge first batch.

What is left to trust is the footer's uncompressed sizes: a forged footer could say a page
is small and pyarrow would still decompress it whole. Uploads are re-encoded by us on
ingest, so stored datasets have honest footers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from submitter.datasets.errors import IngestError

if TYPE_CHECKING:
    from submitter.config import Settings

#: Decoded bytes per slice handed to a caller (and the fixed-width bytes per batch).
DECODE_BYTES = 64 << 20
#: Bytes per row counted for the offsets/indices of a text column and for a nested one.
_VARIABLE_WIDTH = 4
_NESTED_WIDTH = 8


def _size(n: int) -> str:
    """Bytes as the operator would write them: 1 MiB, 256 MiB, 8 GiB, else bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class DatasetLimits:
    """How large a dataset may be once decompressed; see the `SUBMITTER_MAX_*_BYTES` settings."""

    dataset_bytes: int = 8 << 30
    row_group_bytes: int = 256 << 20
    cell_bytes: int = 1 << 20

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetLimits:
        return cls(
            dataset_bytes=settings.max_dataset_bytes,
            row_group_bytes=settings.max_row_group_bytes,
            cell_bytes=settings.max_cell_bytes,
        )

    @property
    def decode_bytes(self) -> int:
        """Decoded bytes per slice: small enough to stay well inside one row group's budget."""
        return max(1 << 20, min(DECODE_BYTES, self.row_group_bytes // 4))


class LimitExceeded(IngestError):
    """A dataset decodes to more than a limit allows. `setting` names the `SUBMITTER_*` key.

    An `IngestError` (code ``too_large``), so an upload refused this way is a 422 naming the
    file; a read of a stored dataset that is over a limit fails with the same message.
    """

    def __init__(self, setting: str, limit: int, what: str) -> None:
        super().__init__(
            f"{what}, over the limit of {_size(limit)} ({setting})",
            code="too_large",
        )
        self.setting = setting
        self.limit = limit


def _fixed_width(dtype: pa.DataType) -> int:
    """Bytes per row of a column in memory, at least (its values' width, or an offset)."""
    if pa.types.is_dictionary(dtype):
        return int(dtype.index_type.bit_width // 8)
    if pa.types.is_boolean(dtype):
        return 1
    try:
        return max(1, dtype.bit_width // 8)
    except ValueError:  # not fixed width
        pass
    if pa.types.is_nested(dtype):
        return _NESTED_WIDTH
    return _VARIABLE_WIDTH


def _is_bytes(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
    )


class Tally:
    """Decoded bytes counted over one read, checked against `dataset_bytes` as they grow."""

    def __init__(self, limits: DatasetLimits) -> None:
        self.limits = limits
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        if self.bytes > self.limits.dataset_bytes:
            raise LimitExceeded(
                "SUBMITTER_MAX_DATASET_BYTES",
                self.limits.dataset_bytes,
                f"the dataset decodes to {self.bytes} bytes or more",
            )


def cell_lengths(array: pa.Array) -> pa.Array | None:
    """Byte length of each value of a text/binary column (also dictionary-encoded), or None.

    For a dictionary array the lengths come from the dictionary, taken by the indices: no
    value is decoded.
    """
    if isinstance(array, pa.DictionaryArray):
        if not _is_bytes(array.type.value_type):
            return None
        return pc.binary_length(array.dictionary).take(array.indices)
    if _is_bytes(array.type):
        return pc.binary_length(array)
    return None


def check_cells(name: str, lengths: pa.Array, limits: DatasetLimits, first_row: int) -> None:
    """Refuse a column whose longest value is over `cell_bytes`, naming the row."""
    if len(lengths) == 0 or lengths.null_count == len(lengths):
        return
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > limits.cell_bytes:
        row = pc.index(lengths, pa.scalar(longest, lengths.type)).as_py()
        raise LimitExceeded(
            "SUBMITTER_MAX_CELL_BYTES",
            limits.cell_bytes,
            f"column {name!r}, row {first_row + row + 1}, holds a value of {longest} bytes",
        )


def check_batch(batch: pa.RecordBatch, limits: DatasetLimits, tally: Tally, first_row: int) -> None:
    """Check a decoded batch (of CSV): every cell against `cell_bytes`, its size in the total."""
    for index, field in enumerate(batch.schema):
        lengths = cell_lengths(batch.column(index))
        if lengths is not None:
            check_cells(field.name, lengths, limits, first_row)
    tally.add(batch.nbytes)


Source = str | Any  # a path, or anything pq.ParquetFile opens (with a filesystem)


class BoundedParquetFile(pq.ParquetFile):
    """A `pyarrow.parquet.ParquetFile` whose reads stay within `limits` (see the module doc).

    `schema_arrow`, `read`, `iter_batches`, `read_row_group(s)` behave as pyarrow's, with the
    types of the file; a read that would go past a limit raises `LimitExceeded` instead.
    """

    def __init__(
        self,
        source: Source,
        *,
        limits: DatasetLimits,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        plain = pq.ParquetFile(source, filesystem=filesystem)
        self._original_schema = plain.schema_arrow
        metadata = plain.metadata
        if isinstance(source, str) or hasattr(source, "__fspath__"):  # we opened it
            plain.close()
        self.limits = limits
        self._as_dictionary = [
            field.name for field in self._original_schema if _is_bytes(field.type)
        ]
        super().__init__(
            source,
            metadata=metadata,
            read_dictionary=self._as_dictionary or None,
            filesystem=filesystem,
        )

    @property
    def schema_arrow(self) -> pa.Schema:
        """The file's own schema (text columns as text, not as the dictionaries read)."""
        return self._original_schema

    # -- the footer ---------------------------------------------------------------------

    def _selected(self, columns: Sequence[str] | None) -> list[str]:
        names = list(self._original_schema.names)
        if columns is None:
            return names
        wanted = set(columns)
        unknown = wanted.difference(names)
        if unknown:
            raise KeyError(f"no column {sorted(unknown)[0]!r} in the Parquet file")
        return list(dict.fromkeys(columns))  # in the order asked, as pyarrow does

    def check_footer(
        self, columns: Sequence[str] | None = None, row_groups: Sequence[int] | None = None
    ) -> None:
        """Refuse from the footer alone what cannot fit: raises `LimitExceeded`."""
        names = self._selected(columns)
        leaves = self._get_column_indices(names) if names else []
        groups = range(self.num_row_groups) if row_groups is None else row_groups
        limits = self.limits
        total = 0
        rows = 0
        for group in groups:
            meta = self.metadata.row_group(group)
            for leaf in leaves:
                # More bytes than its rows could hold at `cell_bytes` each (plus the lengths
                # and page headers): some value is over the limit. This is the one-huge-cell
                # bomb, caught before its page is decompressed.
                chunk = meta.column(leaf).total_uncompressed_size
                if chunk > meta.num_rows * (limits.cell_bytes + 16) + 4096:
                    raise LimitExceeded(
                        "SUBMITTER_MAX_CELL_BYTES",
                        limits.cell_bytes,
                        f"column {meta.column(leaf).path_in_schema!r} of row group {group + 1} "
                        f"is {chunk} bytes uncompressed in {meta.num_rows} row(s), "
                        "so it holds a larger value",
                    )
            size = sum(meta.column(leaf).total_uncompressed_size for leaf in leaves)
            if size > limits.row_group_bytes:
                raise LimitExceeded(
                    "SUBMITTER_MAX_ROW_GROUP_BYTES",
                    limits.row_group_bytes,
                    f"row group {group + 1} of the Parquet file is {size} bytes uncompressed "
                    "(write it with smaller row groups)",
                )
            total += size
            rows += meta.num_rows
        width = sum(_fixed_width(self._original_schema.field(name).type) for name in names)
        for what, count in (
            (f"the Parquet file is {total} bytes uncompressed", total),
            (f"{rows} rows of {width} bytes decode to {rows * width} bytes", rows * width),
        ):
            if count > limits.dataset_bytes:
                raise LimitExceeded("SUBMITTER_MAX_DATASET_BYTES", limits.dataset_bytes, what)

    # -- reading ------------------------------------------------------------------------

    def iter_batches(
        self,
        batch_size: int = 65536,
        row_groups: Sequence[int] | None = None,
        columns: Sequence[str] | None = None,
        use_threads: bool = True,
        use_pandas_metadata: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        names = self._selected(columns)
        self.check_footer(names, row_groups)
        schema = pa.schema([self._original_schema.field(name) for name in names])
        width = max(1, sum(_fixed_width(field.type) for field in schema))
        batch_size = max(1, min(batch_size, self.limits.decode_bytes // width))
        tally = Tally(self.limits)
        first_row = 0
        groups = list(range(self.num_row_groups) if row_groups is None else row_groups)
        for group in groups:
            batches = super().iter_batches(
                batch_size=batch_size,
                row_groups=[group],
                columns=names,
                use_threads=use_threads,
                use_pandas_metadata=use_pandas_metadata,
            )
            for batch in batches:
                yield from self._decoded(batch, schema, width, tally, first_row)
                first_row += batch.num_rows

    def _decoded(
        self,
        batch: pa.RecordBatch,
        schema: pa.Schema,
        width: int,
        tally: Tally,
        first_row: int,
    ) -> Iterator[pa.RecordBatch]:
        """Check `batch` (text columns still dictionaries), then decode it slice by slice."""
        row_bytes = np.full(batch.num_rows, width, dtype=np.int64)
        decode: dict[int, pa.DataType] = {}
        for index, field in enumerate(schema):
            column = batch.column(batch.schema.get_field_index(field.name))
            lengths = cell_lengths(column)
            if lengths is not None:
                check_cells(field.name, lengths, self.limits, first_row)
                row_bytes += lengths.fill_null(0).to_numpy(zero_copy_only=False)
            elif pa.types.is_nested(field.type):
                row_bytes += column.nbytes // max(1, batch.num_rows)
            if isinstance(column, pa.DictionaryArray) and not pa.types.is_dictionary(field.type):
                decode[index] = field.type
        tally.add(int(row_bytes.sum()))
        if not decode:
            yield batch
            return
        # Cut where the running size crosses a multiple of the slice budget.
        if batch.num_rows == 0:
            return
        budget = self.limits.decode_bytes
        ends = np.cumsum(row_bytes)
        cuts = np.searchsorted(ends, np.arange(1, 1 + int(ends[-1]) // budget) * budget)
        bounds = sorted({0, *(int(c) + 1 for c in cuts), batch.num_rows})
        for start, stop in itertools.pairwise(bounds):
            if stop <= start:
                continue
            part = batch.slice(start, stop - start)
            arrays = []
            for index, field in enumerate(schema):
                column = part.column(part.schema.get_field_index(field.name))
                if index in decode:
                    column = column.dictionary_decode()
                    if column.type != field.type:
                        column = column.cast(field.type)
                arrays.append(column)
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    def read(
        self,
        columns: Sequence[str] | None = None,
        use_threads: bool = True,
        use_pandas_metadata: bool = False,
    ) -> pa.Table:
        return self.read_row_groups(
            range(self.num_row_groups),
            columns=columns,
            use_threads=use_threads,
            use_pandas_metadata=use_pandas_metadata,
        )

    def read_row_groups(
        self,
        row_groups: Sequence[int],
        columns: Sequence[str] | None = None,
        use_threads: bool = True,
        use_pandas_metadata: bool = False,
    ) -> pa.Table:
        names = self._selected(columns)
        schema = pa.schema(
            [self._original_schema.field(name) for name in names],
            metadata=self._original_schema.metadata,
        )
        batches = list(
            self.iter_batches(
                row_groups=list(row_groups),
                columns=names,
                use_threads=use_threads,
                use_pandas_metadata=use_pandas_metadata,
            )
        )
        return pa.Table.from_batches(batches, schema=schema)

    def read_row_group(
        self,
        i: int,
        columns: Sequence[str] | None = None,
        use_threads: bool = True,
        use_pandas_metadata: bool = False,
    ) -> pa.Table:
        return self.read_row_groups(
            [i], columns=columns, use_threads=use_threads, use_pandas_metadata=use_pandas_metadata
        )
