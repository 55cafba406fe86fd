"""`/api/v1/datasets`: upload (streamed), list, show, preview, aggregate, delete."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response, status

from submitter.api.deps import RuntimeDep, User, Viewer
from submitter.api.errors import API_ERRORS, field_error, responses
from submitter.api.params import Limit, Offset
from submitter.api.uploads import receive_upload
from submitter.datasets import query, service
from submitter.datasets.limits import LimitExceeded
from submitter.datasets.schemas import DatasetOut
from submitter.jobs.schemas import Page

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], responses=API_ERRORS)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "description": "Dataset name."},
                        "format": {"type": "string", "enum": ["csv", "parquet"]},
                        "delimiter": {"type": "string", "description": "CSV delimiter."},
                    },
                }
            }
        },
    }
}


def _ingest_limiter(request: Request) -> anyio.CapacityLimiter:
    """One CSV→Parquet conversion at a time per API process: each needs 100-200 MB and
    both cores; concurrent uploads still stream to disk and then wait their turn."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "ingest_limiter", None)
    if limiter is None:
        limiter = request.app.state.ingest_limiter = anyio.CapacityLimiter(1)
    return limiter


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "The same bytes under this name exist: that version."},
        **responses(413, 422),
    },
)
async def upload_dataset(
    request: Request, runtime: RuntimeDep, caller: User, response: Response
) -> DatasetOut:
    """Upload CSV or Parquet as the next version of `name` (stored as Parquet)."""
    # Under SUBMITTER_HOME, not /tmp: that is often RAM (tmpfs) and uploads reach 1 GiB.
    spool = runtime.settings.ensure_home() / "uploads"
    spool.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=spool) as tmp:
        upload = await receive_upload(
            request, Path(tmp) / "upload", runtime.settings.max_upload_bytes
        )
        name = upload.fields.get("name")
        if not name:
            raise service.InvalidDataset("name", "missing: send the dataset name as 'name'")
        dataset, created = await anyio.to_thread.run_sync(
            lambda: service.create(
                runtime,
                name=name,
                upload=upload.path,
                sha256=upload.sha256,
                upload_bytes=upload.size,
                owner=caller.name,
                filename=upload.filename,
                file_format=upload.fields.get("format") or None,
                delimiter=upload.fields.get("delimiter") or None,
            ),
            limiter=_ingest_limiter(request),
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return DatasetOut.model_validate(dataset)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    runtime: RuntimeDep,
    _: Viewer,
    name: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DatasetOut]:
    items, total = service.list_datasets(runtime, name=name, limit=limit, offset=offset)
    return Page(items=[DatasetOut.model_validate(d) for d in items], total=total)


@router.get("/{ref}", response_model=DatasetOut, responses=responses(404))
def get_dataset(ref: str, runtime: RuntimeDep, _: Viewer) -> DatasetOut:
    """A dataset by id, `name` (latest version) or `name@version`."""
    return DatasetOut.model_validate(service.resolve(runtime, ref))


@router.get("/{ref}/preview", responses=responses(404))
def preview_dataset(
    ref: str,
    runtime: RuntimeDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """The first `limit` rows; long cells cut (and named in `truncated`), the answer bounded.

    422 naming `ref` when the stored dataset decodes past the SUBMITTER_MAX_*_BYTES limits.
    """
    dataset = service.resolve(runtime, ref)
    try:
        return query.preview(
            service.parquet_source(runtime, dataset), limit, service.limits(runtime)
        )
    except LimitExceeded as error:
        raise field_error("path", "ref", error.reason) from None


@router.get("/{ref}/aggregate", responses=responses(404))
def aggregate_dataset(
    ref: str,
    runtime: RuntimeDep,
    _: Viewer,
    fn: Annotated[str, Query(description="count, mean, sum, min, max or nunique")],
    column: str | None = None,
    where: Annotated[
        list[str] | None, Query(description="Equality filter COLUMN:VALUE; repeat to AND.")
    ] = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """E.g. `?fn=mean&column=AGE&where=SEX:1` or `?fn=count&group_by=EDUCATION`."""
    filters: list[tuple[str, str]] = []
    for item in where or []:
        column_name, sep, value = item.partition(":")
        if not sep or not column_name:
            raise query.QueryError("where", f"{item!r} is not COLUMN:VALUE")
        filters.append((column_name, value))
    dataset = service.resolve(runtime, ref)
    source = service.parquet_source(runtime, dataset)
    try:
        return query.aggregate(source, fn, column, filters, group_by, service.limits(runtime))
    except LimitExceeded as error:
        raise field_error("path", "ref", error.reason) from None


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404, 409))
def delete_dataset(ref: str, runtime: RuntimeDep, _: User) -> Response:
    """Delete one version. 409 while a queued or running job reads it.

    Model versions trained on it keep its id as their lineage; it answers 404 "was deleted"."""
    service.delete_dataset(runtime, ref)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
