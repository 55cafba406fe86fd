"""The artifact store interface shared by `LocalStore` and `S3Store`.

Keys are relative ``/``-separated paths (see `submitter.storage.keys`); every method checks
its key and raises `InvalidName` for a bad one. A missing key raises `NotFound` (a
`KeyError`). A prefix in `list` / `delete_prefix` is a whole-segment path: prefix ``a/1``
covers ``a/1/x`` but not ``a/10/x``, nor the object ``a/1`` itself.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import pyarrow.fs

#: Read and write size for streaming copies, and the default chunk of `iter_bytes`.
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object: its key relative to the store root, size in bytes, sha256 if known."""

    key: str
    size: int
    sha256: str | None = None
    modified: datetime | None = None


def copy_hashing(
    source: IO[bytes], target: IO[bytes] | None = None, chunk_size: int = CHUNK_SIZE
) -> tuple[int, str]:
    """Read ``source`` to its end in chunks (into ``target`` if given); return (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = source.read(chunk_size)
        if not chunk:
            break
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"the stream must be binary, it returned {type(chunk).__name__}")
        digest.update(chunk)
        size += len(chunk)
        if target is not None:
            target.write(chunk)
    return size, digest.hexdigest()


class ChunkStream(Iterator[bytes]):
    """Chunks of one object, for streaming HTTP responses; `close()` releases the object.

    Returned by `ArtifactStore.iter_bytes` *after* the object was opened, so a missing key
    raises `NotFound` before a response starts. Closes itself at the end; also a context
    manager.
    """

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._close: Callable[[], None] | None = close

    def __next__(self) -> bytes:
        if self._close is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:  # StopIteration included: done (or failed), release it
            self.close()
            raise

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ArtifactStore(ABC):
    """Where datasets (Parquet) and job artifacts live: a local folder or an S3 prefix."""

    # ---- writing ---------------------------------------------------------------------
    @abstractmethod
    def put(self, key: str, stream: IO[bytes]) -> StoredObject:
        """Store the rest of ``stream`` (read in chunks; need not be seekable) under ``key``.

        Replaces an existing object. Readers see the old object or the new one, never a
        partial one. Returns the size and the sha256 computed while streaming.
        """

    def put_file(self, key: str, path: str | os.PathLike[str]) -> StoredObject:
        """Store the file at ``path`` under ``key``."""
        with builtins.open(path, "rb") as f:
            return self.put(key, f)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        """Store a small in-memory value under ``key``."""
        return self.put(key, io.BytesIO(data))

    # ---- reading ---------------------------------------------------------------------
    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable, buffered binary stream of the object; the caller closes it (``with``).

        Raises `NotFound` right away if the key is missing.
        """

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> ChunkStream:
        """The object as an iterator of byte chunks (``NotFound`` is raised by this call)."""
        stream = self.open(key)
        return ChunkStream(iter(partial(stream.read, chunk_size), b""), stream.close)

    def read_bytes(self, key: str) -> bytes:
        """The whole object in memory: for small objects only."""
        with self.open(key) as f:
            return f.read()

    @abstractmethod
    def download(self, key: str, path: str | os.PathLike[str]) -> Path:
        """Copy the object to the local file ``path`` (atomically replaced); return the path."""

    @abstractmethod
    def stat(self, key: str) -> StoredObject:
        """Size, sha256 (if known) and modification time of one object."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object with this key exists."""

    @abstractmethod
    def list(self, prefix: str = "", *, with_sha256: bool = True) -> builtins.list[StoredObject]:
        """The objects under ``prefix`` (all objects for ``""``), sorted by key.

        Keys are relative to the store root. ``with_sha256=False`` skips looking up checksums
        (on S3 that is one HEAD request per object).
        """

    # ---- deleting --------------------------------------------------------------------
    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error (as on S3; callers clean up)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (which must not be empty); return how many."""

    # ---- operations ------------------------------------------------------------------
    @abstractmethod
    def check(self) -> None:
        """Raise `StoreUnavailable` (with the reason) if the store cannot be used."""

    @abstractmethod
    def describe(self) -> str:
        """A short description for logs and /ready, without secrets."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The object's file for a local store (`NotFound` if missing); None for S3."""

    @abstractmethod
    def pyarrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem and the base path of the store root in it.

        The object ``key`` is at ``f"{base}/{key}"``, so Parquet files can be read in place
        (only the needed columns and row groups): ``pq.read_table(path, filesystem=fs)``.
        """
