"""`/api/v1/jobs/{id}/metrics`: the values a job reported from inside. Logic lives in
submitter.jobmetrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from submitter.api.deps import RuntimeDep, Viewer
from submitter.api.errors import API_ERRORS, responses
from submitter.api.params import Offset
from submitter.api.routes.jobs import JobId
from submitter.jobmetrics import service
from submitter.jobmetrics.schemas import MetricOut
from submitter.jobs.schemas import Page

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=API_ERRORS)


@router.get("/{job_id}/metrics", response_model=Page[MetricOut], responses=responses(404))
def job_metrics(
    job_id: JobId,
    runtime: RuntimeDep,
    _: Viewer,
    name: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only this metric.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=100_000, description="At most this many values.")
    ] = 10_000,
    offset: Offset = 0,
) -> Page[MetricOut]:
    """Values the job wrote to `$SUBMITTER_METRICS` (JSON lines `name`, `value`, `step`),
    ordered by name, then step. A running job's grow as it goes (read about every second)."""
    rows, total = service.list_metrics(runtime, job_id, name=name, limit=limit, offset=offset)
    return Page(items=[MetricOut.model_validate(r) for r in rows], total=total)
