"""`S3Store`: objects in an S3 bucket under an optional prefix (``s3://bucket/prefix``).

Why boto3 (and not s3fs or obstore):

* boto3/botocore is AWS's own SDK, released in step with the S3 API, and the most widely
  deployed Python S3 client. It resolves credentials exactly like the AWS CLI (``AWS_*``
  environment variables, shared config/profiles, SSO, web identity/IRSA, instance metadata)
  and talks to S3-compatible servers (MinIO, Ceph, R2, moto) through ``endpoint_url``.
* Its transfer manager (s3transfer) does multipart uploads and ranged parallel downloads
  with retries; ``get_object()["Body"]`` streams. That is everything this store needs.
* s3fs is an fsspec layer over aiobotocore, which pins exact botocore versions (dependency
  conflicts with anything else using boto3), runs an asyncio loop in a thread behind a sync
  API and caches listings; more moving parts for no feature we need.
* obstore (Rust object_store bindings) is fast, but young (0.x, API still moving) and has
  its own, narrower credential resolution. Column/row-group reads in place already go
  through pyarrow's own S3 client (`pyarrow_filesystem`).

Checksums: the sha256 is stored as user metadata ``x-amz-meta-sha256``. S3 needs metadata
when an upload *starts*, so `put` hashes first: a seekable stream is read once for the hash
and rewound; a non-seekable one is copied (while hashing) to a temp file under ``TMPDIR``
(which should not be a RAM disk for large uploads) and uploaded from there by name, which
also lets failed parts be retried. `put_file` hashes the file, then uploads it by name.
Memory stays bounded whatever the object size: files are read part by part, and of a
seekable stream at most ``max_concurrency`` parts of ``multipart_chunksize`` are in memory.
`list` has to HEAD each object to read the checksum (ListObjects returns no metadata);
``with_sha256=False`` skips that.

The bucket is never created: `check()` says clearly when it does not exist.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from submitter.storage.base import (
    CHUNK_SIZE,
    ArtifactStore,
    ChunkStream,
    StoredObject,
    copy_hashing,
)
from submitter.storage.errors import InvalidName, NotFound, StorageError, StoreUnavailable
from submitter.storage.keys import check_key

if TYPE_CHECKING:
    import pyarrow.fs

META_SHA256 = "sha256"  # user metadata key: header x-amz-meta-sha256
DEFAULT_REGION = "us-east-1"
_MISSING_KEY = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class _BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, so that io.BufferedReader can wrap it."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@contextlib.contextmanager
def _hashed_source(stream: IO[bytes]) -> Iterator[tuple[IO[bytes] | Path, int, str]]:
    """(what to upload, size, sha256) for ``stream``: itself, rewound, or a temp file's path."""
    start: int | None = None
    try:
        if stream.seekable():
            start = stream.tell()
    except (AttributeError, OSError, ValueError):
        start = None
    if start is not None:
        size, sha256 = copy_hashing(stream)
        stream.seek(start)
        yield stream, size, sha256
        return
    with tempfile.TemporaryDirectory(prefix="submitter-upload-") as folder:
        spool = Path(folder) / "data"
        with builtins.open(spool, "wb") as out:
            size, sha256 = copy_hashing(stream, out)
        yield spool, size, sha256


class S3Store(ArtifactStore):
    """Objects under ``s3://bucket/prefix``; credentials and region from the AWS chain."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_chunksize: int = 16 << 20,
        max_concurrency: int = 4,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or None
        self._session = boto3.session.Session()
        self.region = (
            region or os.environ.get("AWS_REGION") or self._session.region_name or DEFAULT_REGION
        )
        self._bucket_region: str | None = None
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=max(10, 2 * max_concurrency + 4),
            # S3-compatible servers generally want path-style URLs
            s3={"addressing_style": "path"} if self.endpoint_url else {},
        )
        self._client = self._session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )
        self._config = config
        self._transfer = TransferConfig(
            multipart_threshold=multipart_chunksize,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            preferred_transfer_client="classic",
        )
        # parts of a non-file stream are read into memory: keep at most this many
        self._transfer.max_in_memory_upload_chunks = max_concurrency

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3Store:
        """The store of ``s3://bucket`` or ``s3://bucket/some/prefix``."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url)

    # ---- helpers ---------------------------------------------------------------------
    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self) -> str:
        url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{url} at {_without_userinfo(self.endpoint_url)}" if self.endpoint_url else url

    def _fail(self, error: Exception, key: str | None, action: str) -> NoReturn:
        """Raise the storage error for a boto3/botocore ``error``."""
        if isinstance(error, NoCredentialsError):
            raise StoreUnavailable(
                f"{self._where()}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from error
        if isinstance(error, ClientError):
            code = _code(error)
            if code == "NoSuchBucket":
                raise StoreUnavailable(self._no_bucket()) from error
            if key is not None and code in _MISSING_KEY:
                raise NotFound(key) from None
            if code in _DENIED:
                raise StorageError(
                    f"{self._where()}: access denied ({code}) to {action} {key or ''}; "
                    "check the AWS credentials and the bucket policy"
                ) from error
            message = error.response.get("Error", {}).get("Message", "")
            raise StorageError(
                f"{self._where()}: {action} {key or ''} failed: {code} {message}"
            ) from error
        if isinstance(error, S3UploadFailedError) and "NoSuchBucket" in str(error):
            raise StoreUnavailable(self._no_bucket()) from error
        if isinstance(error, BotoCoreError):
            raise StoreUnavailable(f"{self._where()}: {action} failed: {error}") from error
        raise StorageError(f"{self._where()}: {action} {key or ''} failed: {error}") from error

    def _no_bucket(self) -> str:
        return (
            f"S3 bucket {self.bucket!r} does not exist ({self._where()}); "
            "create it first, Submitter does not create buckets"
        )

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as error:
            self._fail(error, key, "head")

    def _get_body(self, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except (ClientError, BotoCoreError) as error:
            self._fail(error, key, "read")

    # ---- writing ---------------------------------------------------------------------
    def _upload(
        self, key: str, full: str, size: int, sha256: str, source: IO[bytes] | Path
    ) -> StoredObject:
        extra = {"Metadata": {META_SHA256: sha256}}
        try:
            if isinstance(source, Path):  # read lazily, part by part, and re-read on retries
                self._client.upload_file(
                    str(source), self.bucket, full, ExtraArgs=extra, Config=self._transfer
                )
            else:
                self._client.upload_fileobj(
                    source, self.bucket, full, ExtraArgs=extra, Config=self._transfer
                )
        except (ClientError, BotoCoreError, S3UploadFailedError) as error:
            self._fail(error, key, "upload")
        return StoredObject(key, size, sha256)

    def put(self, key: str, stream: IO[bytes]) -> StoredObject:
        full = self._full(key)
        with _hashed_source(stream) as (source, size, sha256):
            return self._upload(key, full, size, sha256, source)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> StoredObject:
        full = self._full(key)
        with builtins.open(path, "rb") as f:
            size, sha256 = copy_hashing(f)
        return self._upload(key, full, size, sha256, Path(path))

    # ---- reading ---------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(_BodyReader(self._get_body(key)), buffer_size=CHUNK_SIZE)

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> ChunkStream:
        body = self._get_body(key)
        return ChunkStream(body.iter_chunks(chunk_size), body.close)

    def download(self, key: str, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        full = self._full(key)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".submitter-tmp-")
        os.close(fd)
        try:
            self._client.download_file(self.bucket, full, tmp, Config=self._transfer)
            os.replace(tmp, target)
        except (ClientError, BotoCoreError) as error:
            self._fail(error, key, "download")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target

    def stat(self, key: str) -> StoredObject:
        head = self._head(key)
        return StoredObject(
            key,
            int(head["ContentLength"]),
            head.get("Metadata", {}).get(META_SHA256),
            head.get("LastModified"),
        )

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Raw listing entries under ``prefix`` (whole segments; everything for "")."""
        root = f"{self.prefix}/" if self.prefix else ""
        full = f"{root}{check_key(prefix)}/" if prefix else root
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as error:
            self._fail(error, None, "list")

    def list(self, prefix: str = "", *, with_sha256: bool = True) -> builtins.list[StoredObject]:
        skip = len(self.prefix) + 1 if self.prefix else 0
        found: builtins.list[StoredObject] = []
        for entry in self._objects(prefix):
            key = entry["Key"][skip:]
            try:
                check_key(key)
            except InvalidName:
                continue  # not written through a store (e.g. "dir/" markers): not addressable
            found.append(StoredObject(key, int(entry["Size"]), None, entry.get("LastModified")))
        if with_sha256 and found:

            def with_checksum(obj: StoredObject) -> StoredObject:
                try:
                    sha256 = self._head(obj.key).get("Metadata", {}).get(META_SHA256)
                except NotFound:
                    sha256 = None  # deleted meanwhile
                return StoredObject(obj.key, obj.size, sha256, obj.modified)

            with ThreadPoolExecutor(max_workers=min(16, len(found))) as pool:
                found = builtins.list(pool.map(with_checksum, found))
        return sorted(found, key=lambda obj: obj.key)

    # ---- deleting --------------------------------------------------------------------
    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as error:
            self._fail(error, key, "delete")

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidName("refusing to delete the whole store (empty prefix)")
        count = 0
        batch: builtins.list[dict[str, str]] = []

        def flush() -> None:
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as error:
                self._fail(error, prefix, "delete")
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"{self._where()}: could not delete {len(errors)} object(s) under "
                    f"{prefix!r}, e.g. {first.get('Key')!r}: {first.get('Code')} "
                    f"{first.get('Message', '')}"
                )
            batch.clear()

        for entry in self._objects(prefix):
            batch.append({"Key": entry["Key"]})
            count += 1
            if len(batch) == 1000:  # the DeleteObjects limit
                flush()
        if batch:
            flush()
        return count

    # ---- operations ------------------------------------------------------------------
    @functools.cached_property
    def _check_client(self) -> Any:
        """A client for `check()` only: short timeouts, one attempt (made on first use)."""
        quick = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})
        return self._session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=self._config.merge(quick),
        )

    def check(self) -> None:
        """One HEAD of the bucket, on a client of its own with short timeouts and no
        retries: the data client may wait 60 s per read and retries 4 times (right for a
        large part of an upload), so an S3 endpoint that accepts connections but does not
        answer held /ready for minutes."""
        try:
            self._check_client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _code(error) in {"404", "NoSuchBucket", "NotFound"}:
                raise StoreUnavailable(self._no_bucket()) from None
            if _code(error) in _DENIED:
                raise StoreUnavailable(
                    f"{self._where()}: access to bucket {self.bucket!r} denied "
                    f"({_code(error)}); check the AWS credentials and the bucket policy"
                ) from None
            raise StoreUnavailable(f"{self._where()}: {error}") from None
        except NoCredentialsError as error:
            self._fail(error, None, "check")
        except BotoCoreError as error:
            raise StoreUnavailable(f"{self._where()}: S3 is unreachable: {error}") from None

    def describe(self) -> str:
        return f"S3 {self._where()} (region {self.region})"

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    def _region_of_bucket(self) -> str:
        """The bucket's region on AWS (pyarrow does not follow region redirects)."""
        if self.endpoint_url:
            return self.region
        if self._bucket_region is None:
            try:
                head = self._client.head_bucket(Bucket=self.bucket)
                headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                self._bucket_region = headers.get("x-amz-bucket-region") or self.region
            except (ClientError, BotoCoreError):
                return self.region
        return self._bucket_region

    def pyarrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        options: dict[str, Any] = {"region": self._region_of_bucket()}
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            options["scheme"] = parts.scheme or "https"
            options["endpoint_override"] = parts.netloc.rpartition("@")[2]
        # The credentials boto3 resolved (env, profile, SSO, ...), frozen for this filesystem
        # (temporary ones expire: get a filesystem per query rather than keeping one);
        # without any, pyarrow falls back to its own default chain.
        credentials = self._session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options.update(
                access_key=frozen.access_key,
                secret_key=frozen.secret_key,
                session_token=frozen.token,
            )
        base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return pyarrow.fs.S3FileSystem(**options), base
