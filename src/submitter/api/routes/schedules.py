"""`/api/v1/schedules`: periodic jobs. Logic lives in submitter.schedules.service."""

from __future__ import annotations

from fastapi import APIRouter, status

from submitter.api.deps import RuntimeDep, User, Viewer
from submitter.api.errors import API_ERRORS, responses
from submitter.api.params import Limit, Offset
from submitter.jobs.schemas import JobOut, Page
from submitter.schedules import service
from submitter.schedules.schemas import ScheduleCreate, ScheduleOut, ScheduleUpdate

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"], responses=API_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    responses=responses(409),
)
def create_schedule(body: ScheduleCreate, runtime: RuntimeDep, caller: User) -> ScheduleOut:
    """Store a job request and when to submit it. The job is validated now (422 naming the
    field); its jobs are submitted under the caller's API key, so revoking the key stops them."""
    return ScheduleOut.model_validate(service.create(runtime, body, owner=caller.id))


@router.get("", response_model=Page[ScheduleOut])
def list_schedules(
    runtime: RuntimeDep,
    _: Viewer,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ScheduleOut]:
    items, total = service.list_schedules(runtime, limit=limit, offset=offset)
    return Page(items=[ScheduleOut.model_validate(s) for s in items], total=total)


@router.get("/{ref}", response_model=ScheduleOut, responses=responses(404))
def get_schedule(ref: str, runtime: RuntimeDep, _: Viewer) -> ScheduleOut:
    """One schedule, by id or name. Its jobs: `GET /api/v1/jobs?schedule=<id>`."""
    return ScheduleOut.model_validate(service.get(runtime, ref))


@router.patch("/{ref}", response_model=ScheduleOut, responses=responses(404, 409))
def update_schedule(ref: str, body: ScheduleUpdate, runtime: RuntimeDep, _: User) -> ScheduleOut:
    """Change the fields sent (`{"enabled": false}` pauses it)."""
    return ScheduleOut.model_validate(service.change(runtime, ref, body))


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404))
def delete_schedule(ref: str, runtime: RuntimeDep, _: User) -> None:
    """Remove the schedule; the jobs it submitted are kept."""
    service.delete(runtime, ref)


@router.post(
    "/{ref}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=responses(404, 409),
)
def run_schedule_now(ref: str, runtime: RuntimeDep, _: User) -> JobOut:
    """Submit the schedule's job now, outside its rhythm."""
    return JobOut.model_validate(service.run_now(runtime, ref))
