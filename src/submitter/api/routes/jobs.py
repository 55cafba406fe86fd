"""`/api/v1/jobs`: submit, list, show, cancel, logs, events, artifacts. Logic lives in
submitter.jobs."""

from __future__ import annotations

import mimetypes
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from submitter.api.deps import RuntimeDep, User, Viewer
from submitter.api.errors import API_ERRORS, responses
from submitter.api.params import Limit, Offset
from submitter.api.sse import SSE_RESPONSE, sse_response
from submitter.db.types import INT64_MAX
from submitter.jobs import artifacts, events, service
from submitter.jobs.schemas import (
    ArtifactOut,
    JobBatchCreate,
    JobBatchOut,
    JobCreate,
    JobOut,
    LogLineOut,
    Page,
    SweepTable,
)
from submitter.jobs.states import JobState
from submitter.schedules import service as schedules
from submitter.sweeps import service as sweeps


def _job_id(
    job_id: Annotated[str, Path(description="A job id, or a unique prefix of 8+ characters.")],
    runtime: RuntimeDep,
    _: Viewer,
) -> str:
    return service.resolve_id(runtime, job_id)


#: The job a path names: its whole id, or a unique prefix (after the key is checked).
JobId = Annotated[str, Depends(_job_id)]

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=API_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {"description": "A job with this idempotency key exists: that job."},
        **responses(409),
    },
)
async def submit_job(body: JobCreate, runtime: RuntimeDep, caller: User) -> Response:
    """Accept a job. It is stored before it is queued: once you have its id, it is not lost."""
    job, created = await service.submit_async(runtime, caller.id, body)
    return Response(
        JobOut.model_validate(job).model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        media_type="application/json",
    )


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobBatchOut,
    responses={
        200: {"description": "Every job's idempotency key named an existing job: those jobs."},
        **responses(409),
    },
)
def submit_batch(
    body: JobBatchCreate, runtime: RuntimeDep, caller: User, response: Response
) -> JobBatchOut:
    """Accept up to 1,000 jobs at once, all or none: one invalid request is a 422 naming it
    by index (`loc` `["body", "jobs", 3, "spec", "folds"]`) and nothing is stored. In
    `depends_on`, `#i` names the batch's job at index i, which must come earlier."""
    submitted = service.submit_many(runtime, caller.id, body.jobs)
    if not any(created for _, created in submitted):
        response.status_code = status.HTTP_200_OK
    return JobBatchOut(
        items=[JobOut.model_validate(job) for job, _ in submitted],
        created=[created for _, created in submitted],
    )


@router.get("", response_model=Page[JobOut], responses=responses(404))
def list_jobs(
    runtime: RuntimeDep,
    _: Viewer,
    state: JobState | None = None,
    kind: str | None = None,
    schedule: Annotated[
        str | None, Query(description="Only jobs of this schedule (its id or name).")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[JobOut]:
    items, total = service.list_jobs(
        runtime,
        state=state,
        kind=kind,
        schedule_id=schedules.get(runtime, schedule).id if schedule else None,
        limit=limit,
        offset=offset,
    )
    return Page(items=[JobOut.model_validate(j) for j in items], total=total)


@router.get("/{job_id}", response_model=JobOut, responses=responses(404))
def get_job(job_id: JobId, runtime: RuntimeDep, _: Viewer) -> JobOut:
    return JobOut.model_validate(service.get_job(runtime, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=responses(404, 409))
def cancel_job(job_id: JobId, runtime: RuntimeDep, caller: User) -> JobOut:
    """Cancel a queued job (it never starts) or a running one (it is stopped)."""
    return JobOut.model_validate(service.cancel(runtime, job_id, by=caller.name))


@router.get("/{job_id}/sweep", response_model=SweepTable, responses=responses(404, 422))
def sweep_table(
    job_id: JobId,
    runtime: RuntimeDep,
    _: Viewer,
    best_by: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Sort by this result value, or else this metric's last value, "
            "highest first (`-name`: lowest first); a name no child has is a 422.",
        ),
    ] = None,
) -> SweepTable:
    """A sweep's children side by side: parameters, state, result values and the last
    value of each metric."""
    return SweepTable.model_validate(sweeps.table(runtime, job_id, best_by))


@router.get("/{job_id}/logs", response_model=Page[LogLineOut], responses=responses(404))
def job_logs(
    job_id: JobId,
    runtime: RuntimeDep,
    _: Viewer,
    after: Annotated[int, Query(ge=0, le=INT64_MAX, description="Only lines with id > after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Page[LogLineOut]:
    lines, total = service.job_logs(runtime, job_id, after=after, limit=limit)
    return Page(items=[LogLineOut.model_validate(line) for line in lines], total=total)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **responses(404)},
)
async def job_events(
    job_id: JobId,
    runtime: RuntimeDep,
    _: Viewer,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Send only log lines with id > after.")
    ] = 0,
    last_event_id: Annotated[
        int | None,
        Header(
            ge=0,
            le=INT64_MAX,
            description="The `id:` of the last event received: a reconnect goes on after it "
            "(EventSource sends it by itself). The later of this and `after` is taken.",
        ),
    ] = None,
) -> StreamingResponse:
    """Live updates as Server-Sent Events until the job ends: `state` (the job, at the
    start and on every change), `log` (each new line, as `/logs` items), `end` (the
    finished job; the stream closes). `reconnect` closes a stream open for
    SUBMITTER_EVENTS_MAX_SECONDS, `error` one that cannot go on; `: ping` comments keep a
    quiet stream alive. Every event's `id` is the last log line's id so far."""
    # An unknown job is a 404 (and an unreachable database a 503) before the stream starts.
    await run_in_threadpool(service.get_job, runtime, job_id)
    cursor = events.resume_cursor(after, last_event_id)
    return sse_response(events.job_events(runtime, job_id, after_log=cursor))


@router.get("/{job_id}/artifacts", response_model=Page[ArtifactOut], responses=responses(404))
def list_artifacts(job_id: JobId, runtime: RuntimeDep, _: Viewer) -> Page[ArtifactOut]:
    """Files the job wrote into its workdir, kept after it ended."""
    items = artifacts.list_artifacts(runtime, job_id)
    return Page(items=[ArtifactOut.model_validate(a) for a in items], total=len(items))


@router.get(
    "/{job_id}/artifacts/{name:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **responses(404)},
)
def get_artifact(job_id: JobId, name: str, runtime: RuntimeDep, _: Viewer) -> StreamingResponse:
    """Stream one artifact (`name` may contain `/`)."""
    artifact = artifacts.get_artifact(runtime, job_id, name)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    filename = name.rsplit("/", 1)[-1]
    return StreamingResponse(
        runtime.store.iter_bytes(artifact.storage_key),
        media_type=media_type,
        headers={
            "Content-Length": str(artifact.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            "X-Checksum-SHA256": artifact.sha256,
        },
    )
