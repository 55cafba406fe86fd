"""`/api/v1/tasks`: beat's built-in tasks and how they fare (is beat running?)."""

from __future__ import annotations

from fastapi import APIRouter

from submitter.api.deps import RuntimeDep, Viewer
from submitter.api.errors import API_ERRORS
from submitter.jobs.schemas import Page
from submitter.worker.beat_status import BeatTaskView, list_tasks

router = APIRouter(prefix="/api/v1/tasks", tags=["operations"], responses=API_ERRORS)


@router.get("", response_model=Page[BeatTaskView])
def tasks(runtime: RuntimeDep, _: Viewer) -> Page[BeatTaskView]:
    """The reconciler, the HPC monitor and clean-up and the schedule check: `ok`, `failing`
    (the last run raised), `late` (not run for three intervals: is beat running?) or
    `never`. The work itself is in jobs (`/api/v1/jobs`) and, live, in Flower."""
    items = list_tasks(runtime)
    return Page(items=items, total=len(items))
