"""`/api/v1/workers`: the worker processes, as they report themselves in the database."""

from __future__ import annotations

from fastapi import APIRouter

from submitter.api.deps import RuntimeDep, Viewer
from submitter.api.errors import API_ERRORS
from submitter.jobs.schemas import Page
from submitter.worker.presence import WorkerView, list_workers

router = APIRouter(prefix="/api/v1/workers", tags=["operations"], responses=API_ERRORS)


@router.get("", response_model=Page[WorkerView])
def workers(runtime: RuntimeDep, _: Viewer) -> Page[WorkerView]:
    """Workers seen in the last day: `online`, `offline` (not heard from for about a job
    lease: killed or cut off) or `stopped`, with their queues and the jobs running on them."""
    items = list_workers(runtime)
    return Page(items=items, total=len(items))
