"""Datasets: the list with an upload form (progress bar), and a version's page with its
schema, preview, column statistics and the other versions of its name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from submitter.api.routes import datasets as api_datasets
from submitter.datasets import query, service
from submitter.datasets.limits import LimitExceeded
from submitter.datasets.schemas import DatasetOut
from submitter.datasets.stats import column_stats
from submitter.ui import UPLOAD_PATH
from submitter.ui.deps import RuntimeDep, UiUser, UiViewer
from submitter.ui.nav import NavItem
from submitter.ui.render import page

router = APIRouter(prefix="/ui/datasets", include_in_schema=False)
NAV = NavItem("Datasets", "/ui/datasets", order=20)

PAGE_SIZE = 50
PREVIEW_ROWS = 20


def dataset_ref(dataset: DatasetOut) -> str:
    return f"{dataset.name}@{dataset.version}"


@router.get("")
def list_page(
    request: Request,
    runtime: RuntimeDep,
    session: UiViewer,
    name: str | None = None,
    offset: str = "0",
) -> HTMLResponse:
    start = int(offset) if offset.isdigit() and len(offset) < 10 else 0
    items, total = service.list_datasets(runtime, name=name or None, limit=PAGE_SIZE, offset=start)
    return page(
        request,
        "datasets/list.html",
        session,
        datasets=[DatasetOut.model_validate(d) for d in items],
        total=total,
        offset=start,
        page_size=PAGE_SIZE,
        name=name or "",
        upload_path=UPLOAD_PATH,
    )


@router.post("/upload")
async def upload(request: Request, runtime: RuntimeDep, session: UiUser) -> JSONResponse:
    """The upload form's XMLHttpRequest: the API's own upload (streamed, bounded, the same
    checks and the same 4xx bodies), behind the session cookie and the CSRF header."""
    response = Response(status_code=201)  # the API route sets 200 for bytes it has already
    dataset = await api_datasets.upload_dataset(request, runtime, session.principal, response)
    body = dataset.model_dump(mode="json")
    body["url"] = f"/ui/datasets/{dataset_ref(dataset)}"
    return JSONResponse(body, status_code=response.status_code)


def _versions(runtime: RuntimeDep, name: str) -> list[DatasetOut]:
    items, _ = service.list_datasets(runtime, name=name, limit=100)
    return [DatasetOut.model_validate(d) for d in items]


@router.get("/{ref}")
def dataset_page(
    request: Request, ref: str, runtime: RuntimeDep, session: UiViewer
) -> HTMLResponse:
    found = service.resolve(runtime, ref)
    dataset = DatasetOut.model_validate(found)
    preview: dict[str, Any] | None = None
    preview_error = None
    try:
        preview = query.preview(
            service.parquet_source(runtime, found), PREVIEW_ROWS, service.limits(runtime)
        )
    except LimitExceeded as error:
        preview_error = error.reason
    return page(
        request,
        "datasets/detail.html",
        session,
        dataset=dataset,
        ref=dataset_ref(dataset),
        versions=_versions(runtime, dataset.name),
        preview=preview,
        preview_error=preview_error,
    )


@router.get("/{ref}/stats")
async def stats_fragment(
    request: Request, ref: str, runtime: RuntimeDep, session: UiViewer
) -> HTMLResponse:
    """Column statistics, loaded after the page (a full read of every column)."""

    def compute() -> dict[str, Any]:
        dataset = service.resolve(runtime, ref)
        try:
            stats, rows = column_stats(runtime, dataset)
        except LimitExceeded as error:
            return {"stats": None, "error": error.reason}
        return {"stats": stats, "rows": rows, "total": dataset.row_count, "error": None}

    context = await run_in_threadpool(compute)
    return page(request, "datasets/_stats.html", session, **context)
