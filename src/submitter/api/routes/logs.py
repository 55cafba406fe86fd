"""`/api/v1/logs/{service}`: the recent log records of the service processes (admin only).

Logic lives in submitter.servicelogs; the records come from each process's handler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from submitter.api.deps import Admin, RuntimeDep
from submitter.api.errors import API_ERRORS
from submitter.api.params import Limit, Offset
from submitter.db.types import INT64_MAX
from submitter.jobs.schemas import Page
from submitter.servicelogs import service as servicelogs
from submitter.servicelogs.schemas import (
    LevelName,
    Order,
    ServiceFilter,
    ServiceLogOut,
    as_utc,
)

router = APIRouter(prefix="/api/v1/logs", tags=["operations"], responses=API_ERRORS)

Time = Annotated[datetime | None, AfterValidator(as_utc)]


@router.get("/{service}", response_model=Page[ServiceLogOut])
def service_logs(
    service: Annotated[
        ServiceFilter, Path(description="api, worker, beat, flower, or all of them.")
    ],
    runtime: RuntimeDep,
    _: Admin,
    host: Annotated[
        str | None, Query(max_length=255, description="Only this host (exact name).")
    ] = None,
    level: Annotated[
        LevelName | None, Query(description="At least this level: WARNING includes ERROR.")
    ] = None,
    job_id: Annotated[
        str | None, Query(max_length=64, description="Only records logged while this job ran.")
    ] = None,
    since: Annotated[
        Time, Query(description="Logged at or after this time (ISO 8601; no zone is UTC).")
    ] = None,
    until: Annotated[Time, Query(description="Logged before this time.")] = None,
    after_id: Annotated[
        int | None,
        Query(ge=0, le=INT64_MAX, description="Only records with a greater id (to follow)."),
    ] = None,
    order: Annotated[
        Order, Query(description="`newest` first (the default) or `oldest` first, by id.")
    ] = "newest",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ServiceLogOut]:
    """Records of the api, worker, beat and flower processes on every host, from the
    bounded `service_logs` table (`SUBMITTER_SERVICE_LOG_MAX_ROWS`, `..._MAX_AGE_SECONDS`).

    Ordered by id, the order they reached the database: `newest` first by default. To
    follow, read `order=oldest&after_id=<last id seen>` again and again. `total` counts
    every record the filters match. The full stream stays on each process's stdout.
    """
    query = servicelogs.LogQuery(
        service=None if service == "all" else service,
        host=host,
        level=level,
        job_id=job_id,
        since=since,
        until=until,
        after_id=after_id,
    )
    items, total = servicelogs.list_logs(runtime, query, order=order, limit=limit, offset=offset)
    return Page(items=items, total=total)
