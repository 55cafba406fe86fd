"""`LocalStore`: objects are files under a root folder (``file:///...`` storage URLs).

Writes go to a temp file in the target's folder (``.submitter-tmp-*``), are fsynced and then
`os.replace`d onto the key's path, so a reader never sees half a file and a failed write
leaves nothing behind. (The folder is not fsynced: after a power cut a just-written object
may be missing, never partial.) Unlike S3, a folder cannot hold both ``a`` and ``a/b``:
such a clash raises `StorageError`.

Checksums: the sha256 computed while writing is kept in a sidecar JSON file in a parallel
hidden tree, ``<root>/.submitter-meta/<key>``, together with the data file's inode, size and
mtime. A sidecar whose file no longer matches (replaced or edited behind the store's back)
is ignored, and the sha256 is then reported as unknown (None) rather than recomputed, so
that `list` stays cheap on large datasets. The sidecar is written before the data file is
renamed into place (a rename keeps inode and mtime), so a visible file has its checksum.

Every key is checked (`check_key`) and its resolved path must stay inside the resolved
root, which refuses symlinks pointing outside (defence in depth; not race-free against an
attacker who can create symlinks inside the root concurrently).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

from submitter.storage.base import CHUNK_SIZE, ArtifactStore, StoredObject, copy_hashing
from submitter.storage.errors import InvalidName, NotFound, StorageError, StoreUnavailable
from submitter.storage.keys import RESERVED_PREFIX, check_key

if TYPE_CHECKING:
    import pyarrow.fs

META_DIR = RESERVED_PREFIX + "meta"
TMP_PREFIX = RESERVED_PREFIX + "tmp-"

# Files from mkstemp are 0600; give stored files the mode open() would (0666 & ~umask).
# Read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

T = TypeVar("T")


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)


def _atomic_write(
    path: Path,
    fill: Callable[[IO[bytes]], T],
    before_replace: Callable[[os.stat_result], None] | None = None,
) -> tuple[T, os.stat_result]:
    """Write ``path`` through a temp file in its folder, fsync, then `os.replace` it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            result = fill(out)
            out.flush()
            os.fchmod(out.fileno(), _FILE_MODE)
            os.fsync(out.fileno())
            st = os.fstat(out.fileno())
        if before_replace is not None:
            before_replace(st)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return result, st


def _is_missing(error: OSError) -> bool:
    """The key is not a file: missing, a folder, or a file where a folder would be."""
    return isinstance(error, FileNotFoundError | IsADirectoryError | NotADirectoryError)


class LocalStore(ArtifactStore):
    """Objects as files under ``root``; created on the first write or `check()`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        """The store of a ``file:///absolute/folder`` URL (host empty or ``localhost``)."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ValueError(f"not a file:// URL: {url!r}")
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a remote host is not supported: {url!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file:// URL needs an absolute path (file:///...): {url!r}")
        return cls(path)

    # ---- paths -----------------------------------------------------------------------
    def _inside(self, path: Path, key: str) -> Path:
        """``path`` if its resolved form (symlinks followed) is inside the resolved root."""
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InvalidName(f"key {key!r} resolves to a path outside the store (symlink?)")
        return path

    def _path(self, key: str) -> Path:
        check_key(key)
        return self._inside(self.root.joinpath(*key.split("/")), key)

    def _meta_path(self, key: str) -> Path:
        return self._inside(self.root.joinpath(META_DIR, *key.split("/")), key)

    # ---- sidecars --------------------------------------------------------------------
    @staticmethod
    def _identity(st: os.stat_result) -> dict[str, int]:
        """What must match between a data file and its sidecar for the checksum to count."""
        return {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}

    def _write_meta(self, key: str, st: os.stat_result, sha256: str) -> None:
        record = {
            "sha256": sha256,
            "size": st.st_size,
            "ino": st.st_ino,
            "mtime_ns": st.st_mtime_ns,
        }
        data = json.dumps(record).encode()
        try:
            meta = self._meta_path(key)
            meta.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(meta, lambda out: out.write(data))
        except (OSError, InvalidName):
            # Best effort: without its sidecar the object's sha256 is just unknown.
            self._delete_meta(key)

    def _read_meta(self, key: str, st: os.stat_result) -> str | None:
        try:
            with builtins.open(self._meta_path(key), "rb") as f:
                record = json.loads(f.read(4096))
        except (OSError, ValueError, InvalidName):
            return None
        if not isinstance(record, dict):
            return None
        if any(record.get(name) != value for name, value in self._identity(st).items()):
            return None  # the file changed since the checksum was taken
        sha256 = record.get("sha256")
        return sha256 if isinstance(sha256, str) else None

    def _delete_meta(self, key: str) -> None:
        with contextlib.suppress(OSError, InvalidName):
            self._meta_path(key).unlink()

    # ---- writing ---------------------------------------------------------------------
    def put(self, key: str, stream: IO[bytes]) -> StoredObject:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._conflict(key) from None
        self._inside(path, key)  # again, now that the folders exist
        hashed: list[str] = []

        def save_checksum(st: os.stat_result) -> None:
            self._write_meta(key, st, hashed[0])

        def fill(out: IO[bytes]) -> int:
            size, sha256 = copy_hashing(stream, out, CHUNK_SIZE)
            hashed.append(sha256)
            return size

        try:
            size, st = _atomic_write(path, fill, save_checksum)
        except IsADirectoryError:
            raise self._conflict(key) from None
        return StoredObject(key, size, hashed[0], _mtime(st))

    @staticmethod
    def _conflict(key: str) -> StorageError:
        return StorageError(
            f"key {key!r} clashes with an existing object or folder: a local store cannot "
            "hold both 'a' and 'a/b'"
        )

    # ---- reading ---------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return builtins.open(path, "rb", buffering=CHUNK_SIZE)
        except OSError as error:
            if _is_missing(error):
                raise NotFound(key) from None
            raise

    def download(self, key: str, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        with self.open(key) as source:
            _atomic_write(target, lambda out: shutil.copyfileobj(source, out, CHUNK_SIZE))
        return target

    def _stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as error:
            if _is_missing(error):
                raise NotFound(key) from None
            raise
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key)
        return path, st

    def stat(self, key: str) -> StoredObject:
        _, st = self._stat(key)
        return StoredObject(key, st.st_size, self._read_meta(key, st), _mtime(st))

    def exists(self, key: str) -> bool:
        try:
            self._stat(key)
        except NotFound:
            return False
        return True

    def _walk(self, base: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
        """(key, path, stat) of the regular files under ``base``; symlinks are not followed."""
        for dirpath, dirnames, filenames in os.walk(base):
            folder = Path(dirpath)
            if folder == self.root and META_DIR in dirnames:
                dirnames.remove(META_DIR)
            for name in filenames:
                if name.startswith(RESERVED_PREFIX):
                    continue  # temp files of writes in progress
                path = folder / name
                try:
                    st = path.lstat()
                except OSError:
                    continue  # deleted meanwhile
                if stat.S_ISREG(st.st_mode):
                    yield path.relative_to(self.root).as_posix(), path, st

    def list(self, prefix: str = "", *, with_sha256: bool = True) -> builtins.list[StoredObject]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = [
            StoredObject(
                key, st.st_size, self._read_meta(key, st) if with_sha256 else None, _mtime(st)
            )
            for key, _, st in self._walk(base)
        ]
        return sorted(found, key=lambda obj: obj.key)

    # ---- deleting --------------------------------------------------------------------
    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except OSError as error:
            # unlink() of a folder: EISDIR on Linux, EPERM on macOS (not an object: ignored)
            folder = isinstance(error, PermissionError) and path.is_dir()
            if not (_is_missing(error) or folder):
                raise
        self._delete_meta(key)

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidName("refusing to delete the whole store (empty prefix)")
        base = self._path(prefix)
        if base.is_symlink() or not base.is_dir():
            return 0
        count = sum(1 for _ in self._walk(base))
        shutil.rmtree(base)
        with contextlib.suppress(OSError, InvalidName):
            shutil.rmtree(self._meta_path(prefix))
        return count

    # ---- operations ------------------------------------------------------------------
    def check(self) -> None:
        where = f"local artifact folder {self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreUnavailable(f"{where} is not a folder") from None
        except OSError as error:
            raise StoreUnavailable(f"{where} cannot be created: {error.strerror}") from None
        if not self.root.is_dir():
            raise StoreUnavailable(f"{where} is not a folder")
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX)
            os.close(fd)
            os.unlink(tmp)
        except OSError as error:
            raise StoreUnavailable(f"{where} is not writable: {error.strerror}") from None

    def describe(self) -> str:
        return f"local folder {self.root}"

    def local_path(self, key: str) -> Path | None:
        path, _ = self._stat(key)
        return path

    def pyarrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), self.root.as_posix()
