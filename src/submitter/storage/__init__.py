"""The artifact store: datasets (Parquet) and job artifacts, in a local folder or on S3.

``open_store(settings)`` picks the store from ``settings.storage_url``:

* ``file:///abs/folder`` -> `LocalStore`
* ``s3://bucket/prefix`` -> `S3Store` (endpoint ``settings.s3_endpoint_url``; credentials
  and region from the usual ``AWS_*`` environment / AWS config)

Build keys with `join_key` and pass user-given names through `safe_name` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from submitter.storage.base import CHUNK_SIZE, ArtifactStore, ChunkStream, StoredObject
from submitter.storage.errors import InvalidName, NotFound, StorageError, StoreUnavailable
from submitter.storage.keys import check_key, join_key, safe_name
from submitter.storage.local import LocalStore

if TYPE_CHECKING:
    from submitter.config import Settings
    from submitter.storage.s3 import S3Store

__all__ = [
    "CHUNK_SIZE",
    "ArtifactStore",
    "ChunkStream",
    "InvalidName",
    "LocalStore",
    "NotFound",
    "S3Store",
    "StorageError",
    "StoreUnavailable",
    "StoredObject",
    "check_key",
    "join_key",
    "open_store",
    "safe_name",
]


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store of ``settings.storage_url`` (``file://`` or ``s3://``)."""
    url = settings.storage_url
    if url is None:
        raise ValueError("SUBMITTER_STORAGE_URL is not set")
    if url.startswith("file://"):
        return LocalStore.from_url(url)
    if url.startswith("s3://"):
        from submitter.storage.s3 import S3Store

        return S3Store.from_url(url, endpoint_url=settings.s3_endpoint_url)
    raise ValueError(f"SUBMITTER_STORAGE_URL: unsupported scheme in {url!r} (file:// or s3://)")


def __getattr__(name: str) -> Any:
    # boto3 is imported only when S3 is used: `import submitter.storage` stays cheap.
    if name == "S3Store":
        from submitter.storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
