"""The artifact store on real backends: a local folder and a moto S3 server process.

Every test that can runs on both stores (fixture ``store``); the few that are about one
backend (symlinks, sidecars, S3 metadata, broken configurations) say so.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from submitter.config import load_settings
from submitter.storage import (
    ArtifactStore,
    InvalidName,
    LocalStore,
    NotFound,
    S3Store,
    StorageError,
    StoreUnavailable,
    join_key,
    open_store,
)
from tests.storage.conftest import S3_PREFIX, make_store

MiB = 1 << 20


class Generated(io.RawIOBase):
    """A non-seekable stream of ``size`` pseudo-random bytes made on the fly, hashed as read."""

    def __init__(self, size: int, seed: int = 1, fail_at: int | None = None) -> None:
        self.remaining = size
        self.fail_at = fail_at
        self.served = 0
        self.sha256 = hashlib.sha256()
        self.block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
        self.when: tuple[int, Any] | None = None  # (after how many bytes, call this once)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_at is not None and self.served >= self.fail_at:
            raise OSError("client went away")
        if self.when is not None and self.served >= self.when[0]:
            _, call = self.when
            self.when = None
            call()
        n = min(len(buffer), len(self.block), self.remaining)
        data = self.block[self.served % 97 :][:n] or self.block[:n]
        n = len(data)
        buffer[:n] = data
        self.remaining -= n
        self.served += n
        self.sha256.update(data)
        return n


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_chunks(chunks: Iterator[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


# --------------------------------------------------------------------------- round trips


def test_multi_mb_round_trip_from_non_seekable_stream(store: ArtifactStore, tmp_path: Path) -> None:
    source = Generated(20 * MiB + 123)  # over the 16 MiB multipart threshold on S3
    assert not source.seekable()
    stored = store.put("jobs/j1/artifacts/model.bin", source)
    expected = source.sha256.hexdigest()
    assert (stored.key, stored.size, stored.sha256) == (
        "jobs/j1/artifacts/model.bin",
        20 * MiB + 123,
        expected,
    )
    assert store.stat("jobs/j1/artifacts/model.bin").sha256 == expected

    with store.open("jobs/j1/artifacts/model.bin") as f:
        assert hash_chunks(iter(lambda: f.read(MiB), b"")) == (stored.size, expected)
    with store.iter_bytes("jobs/j1/artifacts/model.bin", chunk_size=MiB) as chunks:
        assert hash_chunks(chunks) == (stored.size, expected)
    target = store.download("jobs/j1/artifacts/model.bin", tmp_path / "copy.bin")
    assert sha(target.read_bytes()) == expected


def test_memory_stays_bounded(store: ArtifactStore) -> None:
    """A 40 MiB non-seekable upload and a chunked read never hold the whole object."""
    size = 40 * MiB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        stored = store.put("big.bin", Generated(size, seed=2))
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with store.iter_bytes("big.bin") as chunks:
            assert hash_chunks(chunks)[0] == size
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == size
    assert upload_peak < 12 * MiB, f"put peaked at {upload_peak / MiB:.1f} MiB"
    assert read_peak < 12 * MiB, f"read peaked at {read_peak / MiB:.1f} MiB"


def test_seekable_stream_is_stored_from_its_position(store: ArtifactStore) -> None:
    stream = io.BytesIO(b"headerpayload")
    stream.seek(6)
    stored = store.put("a/b.txt", stream)
    assert (stored.size, stored.sha256) == (7, sha(b"payload"))
    assert store.read_bytes("a/b.txt") == b"payload"


def test_put_file_and_overwrite(store: ArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n")
    first = store.put_file("datasets/d1/raw.csv", path)
    assert (first.size, first.sha256) == (8, sha(b"a,b\n1,2\n"))
    second = store.put_bytes("datasets/d1/raw.csv", b"new")
    assert second.sha256 == sha(b"new")
    assert store.read_bytes("datasets/d1/raw.csv") == b"new"
    assert store.stat("datasets/d1/raw.csv").sha256 == sha(b"new")
    assert [o.key for o in store.list()] == ["datasets/d1/raw.csv"]


def test_key_clash_between_object_and_folder(store: ArtifactStore) -> None:
    """S3 can hold "a" and "a/b"; a folder cannot, and says so instead of an OSError."""
    store.put_bytes("a/b", b"1")
    if isinstance(store, LocalStore):
        with pytest.raises(StorageError, match="clashes"):
            store.put_bytes("a", b"2")
        with pytest.raises(StorageError, match="clashes"):
            store.put_bytes("a/b/c", b"3")
        assert [o.key for o in store.list()] == ["a/b"]
    else:
        store.put_bytes("a", b"2")
        assert [o.key for o in store.list()] == ["a", "a/b"]


def test_empty_object(store: ArtifactStore) -> None:
    stored = store.put_bytes("empty", b"")
    assert (stored.size, stored.sha256) == (0, sha(b""))
    assert store.read_bytes("empty") == b""
    assert list(store.iter_bytes("empty")) == []


# --------------------------------------------------------------------------- listing, deleting


def fill(store: ArtifactStore) -> None:
    for key in ["a/1/x", "a/1/y/z", "a/10/x", "a/1.txt", "b"]:
        store.put_bytes(key, key.encode())


def test_list_with_prefix(store: ArtifactStore) -> None:
    assert store.list() == []
    fill(store)
    everything = store.list()
    assert [o.key for o in everything] == ["a/1.txt", "a/1/x", "a/1/y/z", "a/10/x", "b"]
    assert all(o.size == len(o.key) and o.sha256 == sha(o.key.encode()) for o in everything)
    assert all(o.modified is not None for o in everything)
    # a prefix is whole segments: "a/1" is not "a/10" nor "a/1.txt"
    assert [o.key for o in store.list("a/1")] == ["a/1/x", "a/1/y/z"]
    assert [o.key for o in store.list("a")] == ["a/1.txt", "a/1/x", "a/1/y/z", "a/10/x"]
    assert store.list("nothing/here") == []
    assert store.list("b") == []  # an object, not a folder
    assert {o.sha256 for o in store.list("a", with_sha256=False)} == {None}


def test_exists_and_delete(store: ArtifactStore) -> None:
    fill(store)
    assert store.exists("a/1/x")
    assert not store.exists("a/1")  # a "folder" is not an object
    assert not store.exists("missing")
    store.delete("a/1/x")
    assert not store.exists("a/1/x")
    with pytest.raises(NotFound):
        store.open("a/1/x")
    store.delete("a/1/x")  # deleting a missing key is fine (cleanup paths rely on it)
    store.delete("never/was")
    assert [o.key for o in store.list()] == ["a/1.txt", "a/1/y/z", "a/10/x", "b"]


def test_delete_prefix(store: ArtifactStore) -> None:
    fill(store)
    assert store.delete_prefix("a/1") == 2
    assert [o.key for o in store.list()] == ["a/1.txt", "a/10/x", "b"]
    assert store.delete_prefix("a/1") == 0
    assert store.delete_prefix("nothing") == 0
    with pytest.raises(InvalidName, match="whole store"):
        store.delete_prefix("")
    assert store.delete_prefix("a") == 2
    assert [o.key for o in store.list()] == ["b"]


def test_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("present/file", b"x")
    for call in (
        lambda: store.open("missing"),
        lambda: store.iter_bytes("missing"),  # raised before any chunk is asked for
        lambda: store.stat("missing"),
        lambda: store.read_bytes("present"),  # a "folder"
        lambda: store.download("missing", tmp_path / "out"),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert isinstance(info.value, KeyError)
        assert "no object with key" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".submitter")] == []
    if isinstance(store, LocalStore):
        with pytest.raises(NotFound):
            store.local_path("missing")


def test_iter_bytes_can_be_closed_early(store: ArtifactStore) -> None:
    store.put_bytes("k", b"x" * (3 * MiB))
    chunks = store.iter_bytes("k", chunk_size=MiB)
    assert len(next(chunks)) == MiB
    chunks.close()
    assert list(chunks) == []


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_old_object(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("d/data.parquet", b"old")
    with pytest.raises(OSError, match="client went away"):
        store.put("d/data.parquet", Generated(5 * MiB, fail_at=3 * MiB))
    assert store.read_bytes("d/data.parquet") == b"old"
    with pytest.raises(OSError, match="client went away"):
        store.put("d/new.parquet", Generated(5 * MiB, fail_at=3 * MiB))
    assert not store.exists("d/new.parquet")
    assert [o.key for o in store.list()] == ["d/data.parquet"]
    if isinstance(store, LocalStore):  # and no temp file left behind
        assert sorted(p.name for p in (store.root / "d").iterdir()) == ["data.parquet"]


def test_write_in_progress_is_invisible(store: ArtifactStore) -> None:
    """Half-way through a put, readers see the previous version (or nothing) only."""
    store.put_bytes("k", b"old")
    seen: list[tuple[bool, str, list[str]]] = []

    def look() -> None:
        keys = [o.key for o in store.list(with_sha256=False)]
        seen.append((store.exists("new"), sha(store.read_bytes("k")), keys))

    written = []
    for key in ("k", "new"):
        source = Generated(3 * MiB, seed=len(key))
        source.when = (MiB, look)
        written.append(store.put(key, source).sha256)
    assert seen == [(False, sha(b"old"), ["k"]), (False, written[0], ["k"])]
    assert store.stat("new").size == 3 * MiB


def test_concurrent_writers_never_mix(store: ArtifactStore) -> None:
    """Two writers of one key: the result is one whole version, with its own sha256."""
    payloads = [bytes([n]) * (2 * MiB + n) for n in range(4)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            store.put_bytes("shared", data)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = store.read_bytes("shared")
    assert final in payloads
    assert store.stat("shared").sha256 in {sha(final), None}  # local: None if sidecar lost race


# --------------------------------------------------------------------------- pyarrow


def test_pyarrow_reads_parquet_in_place(store: ArtifactStore, tmp_path: Path) -> None:
    table = pa.table(
        {"id": list(range(1000)), "x": [i * 0.5 for i in range(1000)], "s": ["v"] * 1000}
    )
    local = tmp_path / "t.parquet"
    pq.write_table(table, local, row_group_size=250)
    key = join_key("datasets", "ds1", "data.parquet")
    store.put_file(key, local)

    filesystem, base = store.pyarrow_filesystem()
    path = f"{base}/{key}"
    assert pq.read_table(path, filesystem=filesystem, columns=["x"]).column_names == ["x"]
    with filesystem.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        assert parquet.metadata.num_row_groups == 4
        group = parquet.read_row_group(2, columns=["id"])
        assert group.column("id").to_pylist() == list(range(500, 750))
    assert pq.read_table(path, filesystem=filesystem).equals(table)


# --------------------------------------------------------------------------- checks, factory


def test_check_ok_and_describe(store: ArtifactStore) -> None:
    store.check()
    text = store.describe()
    assert "submitter-test-secret" not in text
    if isinstance(store, S3Store):
        assert store.bucket in text and S3_PREFIX in text and "127.0.0.1" in text
    else:
        assert str(store.root) in text


def test_check_fails_on_missing_bucket(s3_endpoint: str, aws_env: None) -> None:
    store = S3Store.from_url("s3://no-such-bucket-here/x", endpoint_url=s3_endpoint)
    with pytest.raises(StoreUnavailable, match="'no-such-bucket-here' does not exist"):
        store.check()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.put_bytes("k", b"x")


def test_check_fails_when_unreachable(aws_env: None) -> None:
    from tests.services import _free_ports

    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{_free_ports()[0]}")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.check()


def test_check_fails_on_local_root_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match="not a folder"):
        LocalStore(tmp_path / "file").check()
    with pytest.raises(StoreUnavailable, match="cannot be created"):
        LocalStore(tmp_path / "file" / "below").check()
    fresh = LocalStore(tmp_path / "new" / "root")
    fresh.check()  # creates the folder
    assert (tmp_path / "new" / "root").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_fails_on_local_root_unwritable(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreUnavailable, match="not writable"):
            LocalStore(root).check()
    finally:
        root.chmod(0o700)


def test_open_store_by_scheme(tmp_path: Path, s3_endpoint: str, aws_env: None) -> None:
    default = open_store(load_settings(home=tmp_path))
    assert isinstance(default, LocalStore) and default.root == tmp_path / "artifacts"
    local = open_store(load_settings(home=tmp_path, storage_url="file:///srv/my%20store"))
    assert isinstance(local, LocalStore) and local.root == Path("/srv/my store")
    s3 = open_store(
        load_settings(home=tmp_path, storage_url="s3://bkt/a/b/", s3_endpoint_url=s3_endpoint)
    )
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bkt", "a/b", s3_endpoint)
    assert s3.local_path("x") is None
    with pytest.raises(ValueError):
        LocalStore.from_url("file://otherhost/x")


# --------------------------------------------------------------------------- backend specifics


def test_s3_sha256_is_object_metadata(s3_store: S3Store, s3_client: Any) -> None:
    store = s3_store
    store.put("x/y.bin", Generated(MiB))
    head = s3_client.head_object(Bucket=store.bucket, Key=f"{S3_PREFIX}/x/y.bin")
    assert head["ContentLength"] == MiB
    assert head["Metadata"]["sha256"] == store.stat("x/y.bin").sha256
    # objects not written by a store (outside the prefix, "folder" markers) are not listed
    s3_client.put_object(Bucket=store.bucket, Key="elsewhere", Body=b"x")
    s3_client.put_object(Bucket=store.bucket, Key=f"{S3_PREFIX}/x/", Body=b"")
    assert [o.key for o in store.list()] == ["x/y.bin"]


def test_local_sha256_sidecar(local_store: LocalStore) -> None:
    store = local_store
    stored = store.put_bytes("m/model.pt", b"weights")
    reopened = LocalStore(store.root)  # the checksum survives the process
    assert reopened.stat("m/model.pt").sha256 == stored.sha256
    assert [o.key for o in reopened.list()] == ["m/model.pt"]  # sidecars are not listed
    path = reopened.local_path("m/model.pt")
    assert path == store.root / "m" / "model.pt"
    assert path is not None and path.read_bytes() == b"weights"
    path.write_bytes(b"changed behind the store's back")
    assert reopened.stat("m/model.pt").sha256 is None  # stale checksum: unknown, not wrong
    store.delete("m/model.pt")
    assert not any((store.root / ".submitter-meta").rglob("model.pt"))


# --------------------------------------------------------------------------- path traversal

TRAVERSALS = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a\\b",
    "a\x00b",
    "a\nb",
    "..",
    ".",
    "",
    "x" * 300,
]


@pytest.mark.parametrize("key", TRAVERSALS, ids=repr)
def test_path_traversal_refused(store: ArtifactStore, key: str, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = [
        lambda: store.put_bytes(key, b"evil"),
        lambda: store.put_file(key, __file__),
        lambda: store.open(key),
        lambda: store.iter_bytes(key),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.download(key, tmp_path / "out"),
        lambda: store.local_path(key),
        lambda: store.delete_prefix(key),
        lambda: store.put_bytes(f"jobs/1/{key}", b"evil"),
    ]
    if key:
        calls.append(lambda: store.list(key))
    for call in calls:
        with pytest.raises(InvalidName):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert store.list() == []


def test_symlink_out_of_local_root_refused(local_store: LocalStore, tmp_path: Path) -> None:
    store = local_store
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    store.check()
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "file-link").symlink_to(outside / "secret")
    for call in (
        lambda: store.put_bytes("link/planted", b"x"),
        lambda: store.open("link/secret"),
        lambda: store.open("file-link"),
        lambda: store.exists("link/secret"),
        lambda: store.local_path("file-link"),
        lambda: store.delete("file-link"),
        lambda: store.delete_prefix("link"),
        lambda: store.list("link"),
    ):
        with pytest.raises(InvalidName, match="outside the store"):
            call()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "secret"
    assert store.list() == []  # symlinks are not followed when listing


def test_both_stores_agree(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Both stores side by side behave the same on one sequence of operations."""
    results = []
    for kind in ("local", "s3"):
        s = make_store(kind, request, tmp_path / kind)
        s.put_bytes("r/1", b"one")
        s.put_bytes("r/2", b"two")
        s.delete("r/1")
        results.append([(o.key, o.size, o.sha256) for o in s.list("r")])
    assert results[0] == results[1] == [("r/2", 3, sha(b"two"))]
