"""Datasets: versions by name, dedupe by content, references from jobs, reads for queries.

A dataset is stored as Parquet in the artifact store at `datasets/<id>/data.parquet`,
whatever format it was uploaded in. Uploading to an existing name makes the next version;
uploading the same bytes (sha256 of the original upload) under the same name returns the
existing version instead of a duplicate.

Deleting a version removes its Parquet and keeps its row as a tombstone (`deleted_at`): a
model version trained on it still names the data it came from (by id; the API answers 404
"... was deleted" for it), and `name@version` is never given to other data. Deleting is
refused only while a queued or running job reads the version.

Every read of a stored dataset goes through `open_parquet` (or `query` with `limits`),
bounded by the `SUBMITTER_MAX_*_BYTES` settings (`submitter.datasets.limits`).
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from submitter.datasets.errors import IngestError
from submitter.datasets.ingest import DELIMITERS, ingest
from submitter.datasets.limits import BoundedParquetFile, DatasetLimits
from submitter.db.models import Dataset, DatasetReference, Job
from submitter.db.session import rows_changed
from submitter.db.types import INT32_MAX, utcnow
from submitter.jobs.states import ACTIVE
from submitter.names import NAME_RULE, FieldError, is_valid_name
from submitter.runtime import Runtime
from submitter.storage import join_key

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
VERSION_TEXT = re.compile(r"[0-9]{1,10}")
FORMATS = ("csv", "tsv", "txt", "parquet", "pq")

log = logging.getLogger(__name__)


class DatasetNotFound(LookupError):
    pass


class DatasetInUse(Exception):
    pass


class InvalidDataset(FieldError):
    """An upload or a reference is refused."""


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidDataset("name", f"must be {NAME_RULE}")
    return name


def find_id(db: Session | Connection, ref: str, *, deleted: bool = False) -> str | None:
    """The id of a dataset given by id, `name` (latest version) or `name@version`.

    Deleted versions (tombstones) are not found, unless `deleted` (to say so in a 404).
    """
    query = select(Dataset.id)
    if not deleted:
        query = query.where(Dataset.deleted_at.is_(None))
    if ID_PATTERN.fullmatch(ref):
        query = query.where(Dataset.id == ref)
    elif "@" in ref:
        name, _, version = ref.rpartition("@")
        # ASCII digits only ("²".isdigit() is true) and within the column's range.
        if not VERSION_TEXT.fullmatch(version) or int(version) > INT32_MAX:
            return None
        query = query.where(Dataset.name == name, Dataset.version == int(version))
    else:
        query = query.where(Dataset.name == ref).order_by(Dataset.version.desc()).limit(1)
    found: str | None = db.execute(query).scalars().first()
    return found


def resolve(runtime: Runtime, ref: str) -> Dataset:
    with runtime.sessions() as session:
        dataset_id = find_id(session, ref)
        dataset = session.get(Dataset, dataset_id) if dataset_id else None
    if dataset is None:
        with runtime.sessions() as session:
            tombstone_id = find_id(session, ref, deleted=True)
            tombstone = session.get(Dataset, tombstone_id) if tombstone_id else None
        if tombstone is not None and tombstone.deleted_at is not None:
            raise DatasetNotFound(
                f"dataset {tombstone.name}@{tombstone.version} ({tombstone.id}) was deleted "
                f"at {tombstone.deleted_at.isoformat()}"
            )
        raise DatasetNotFound(f"no dataset {ref!r} (give an id, a name or name@version)")
    return dataset


def limits(runtime: Runtime) -> DatasetLimits:
    """What a dataset may decode to, from the settings (`SUBMITTER_MAX_*_BYTES`)."""
    return DatasetLimits.from_settings(runtime.settings)


def _check_options(file_format: str | None, delimiter: str | None) -> None:
    """The form fields besides the file, refused with their own name (no NUL reaches SQL)."""
    if file_format is not None and file_format.strip().lower() not in FORMATS:
        raise InvalidDataset(
            "format", f"unknown format {file_format!r}: expected csv, tsv or parquet"
        )
    printable = delimiter is not None and (delimiter.isprintable() or delimiter == "\t")
    if delimiter is not None and (len(delimiter) != 1 or delimiter == '"' or not printable):
        raise InvalidDataset(
            "delimiter",
            f"must be one printable character other than a quote (e.g. one of "
            f"{' '.join(repr(d) for d in DELIMITERS)}), not {delimiter!r}",
        )


def _discard(runtime: Runtime, dataset_id: str) -> None:
    """Remove whatever an unfinished upload put in the store under `datasets/<id>/`.

    Never raises: the error that made the upload fail is the one to report."""
    try:
        runtime.store.delete_prefix(join_key("datasets", dataset_id))
    except Exception:
        log.exception("could not remove datasets/%s after a failed upload", dataset_id)


def create(
    runtime: Runtime,
    *,
    name: str,
    upload: Path,
    sha256: str,
    upload_bytes: int,
    owner: str,
    filename: str | None = None,
    file_format: str | None = None,
    delimiter: str | None = None,
) -> tuple[Dataset, bool]:
    """Store an uploaded file as the next version of `name`. Return (dataset, created).

    Refused (`InvalidDataset` naming the field) with nothing stored when the file cannot be a
    dataset or decodes past the limits; any failure after the Parquet reached the store
    removes it again (and its folder), whatever the backend said.
    """
    validate_name(name)
    _check_options(file_format, delimiter)
    with runtime.sessions() as session:
        existing = session.scalars(
            select(Dataset)
            .where(Dataset.name == name, Dataset.sha256 == sha256, Dataset.deleted_at.is_(None))
            .limit(1)
        ).first()
    if existing is not None:
        return existing, False
    dataset_id = uuid.uuid4().hex
    key = join_key("datasets", dataset_id, "data.parquet")
    try:
        with tempfile.TemporaryDirectory(prefix="ingest-", dir=upload.parent) as tmp:
            parquet = Path(tmp) / "data.parquet"
            try:
                result = ingest(
                    upload,
                    parquet,
                    filename=filename,
                    format=file_format,
                    delimiter=delimiter,
                    limits=limits(runtime),
                )
            except IngestError as error:
                raise InvalidDataset("file", error.reason) from None
            stored = runtime.store.put_file(key, parquet)
        row: dict[str, Any] = {
            "id": dataset_id,
            "name": name,
            "format": result.format,
            "columns": result.columns,
            "row_count": result.row_count,
            "byte_size": stored.size,
            "upload_bytes": upload_bytes,
            "sha256": sha256,
            "storage_key": key,
            "created_by": owner,
        }
        for _ in range(10):  # two uploads of one name may race for a version number
            try:
                with runtime.engine.begin() as connection:
                    latest = connection.scalar(
                        select(func.max(Dataset.version)).where(Dataset.name == name)
                    )
                    connection.execute(insert(Dataset), {**row, "version": (latest or 0) + 1})
                break
            except IntegrityError:
                continue
        else:
            raise RuntimeError(f"could not allocate a version of {name!r}")
    except BaseException:
        _discard(runtime, dataset_id)
        raise
    return resolve(runtime, dataset_id), True


def list_datasets(
    runtime: Runtime, *, name: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Dataset], int]:
    query = select(Dataset).where(Dataset.deleted_at.is_(None))
    if name:
        query = query.where(Dataset.name == name)
    with runtime.sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = session.scalars(
            query.order_by(Dataset.name, Dataset.version.desc()).limit(limit).offset(offset)
        ).all()
        return list(items), total


def delete_dataset(runtime: Runtime, ref: str) -> Dataset:
    """Delete one version; refused (DatasetInUse) while a queued or running job reads it.

    The row stays as a tombstone (see the module doc), so model versions trained on it and
    jobs that read it keep their lineage; the Parquet leaves the store.
    """
    dataset = resolve(runtime, ref)
    with runtime.transaction() as session:
        users = list(
            session.scalars(
                select(Job.id)
                .join(DatasetReference, DatasetReference.job_id == Job.id)
                .where(
                    DatasetReference.dataset_id == dataset.id,
                    Job.state.in_([s.value for s in ACTIVE]),
                )
            )
        )
        if users:
            raise DatasetInUse(
                f"dataset {dataset.name}@{dataset.version} is used by active job(s) "
                f"{', '.join(users)}"
            )
        deleted = rows_changed(
            session,
            update(Dataset)
            .where(Dataset.id == dataset.id, Dataset.deleted_at.is_(None))
            .values(deleted_at=utcnow()),
        )
        if not deleted:  # deleted meanwhile by another request
            raise DatasetNotFound(f"dataset {dataset.name}@{dataset.version} was deleted")
    runtime.store.delete_prefix(join_key("datasets", dataset.id))
    return dataset


def parquet_source(runtime: Runtime, dataset: Dataset) -> Path | tuple[pyarrow.fs.FileSystem, str]:
    """Where pyarrow reads the dataset: a local path, or (filesystem, path) on S3."""
    local = runtime.store.local_path(dataset.storage_key)
    if local is not None:
        return local
    filesystem, base = runtime.store.pyarrow_filesystem()
    return filesystem, f"{base.rstrip('/')}/{dataset.storage_key}"


def open_parquet(runtime: Runtime, dataset: Dataset) -> BoundedParquetFile:
    """The dataset's Parquet file, opened in place (local path or S3) for batch or column reads.

    A `pyarrow.parquet.ParquetFile` whose reads stay within the settings' limits (describe,
    train and predict read through it): a stored file over them raises `LimitExceeded`.
    """
    source = parquet_source(runtime, dataset)
    if isinstance(source, tuple):
        filesystem, path = source
        return BoundedParquetFile(path, limits=limits(runtime), filesystem=filesystem)
    return BoundedParquetFile(str(source), limits=limits(runtime))


def resolve_spec_datasets(
    db: Session | Connection, fields: tuple[str, ...], spec: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """Replace dataset references in `spec` by ids. Return (spec, ids, pydantic-style errors)."""
    resolved = dict(spec)
    ids: list[str] = []
    errors: list[dict[str, Any]] = []
    for field in fields:
        ref = spec.get(field)
        if ref is None:
            continue
        dataset_id = find_id(db, str(ref))
        if dataset_id is None:
            errors.append(
                {
                    "loc": ["body", "spec", field],
                    "msg": f"no dataset {ref!r} (give an id, a name or name@version)",
                    "type": "unknown_dataset",
                    "input": ref,
                }
            )
            continue
        resolved[field] = dataset_id
        ids.append(dataset_id)
    return resolved, ids, errors
