"""Jobs: the list (filters, live state), a job's page (log following live), its files,
submit and cancel. The same services as `/api/v1/jobs`."""

from __future__ import annotations

import json
import mimetypes
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from submitter.api.inputs import body_errors
from submitter.api.sse import sse_response
from submitter.jobmetrics import charts
from submitter.jobmetrics import service as jobmetrics
from submitter.jobs import artifacts, service
from submitter.jobs.events import job_events, resume_cursor
from submitter.jobs.registry import all_kinds
from submitter.jobs.schemas import ArtifactOut, JobOut, LogLineOut
from submitter.jobs.states import ACTIVE, JobState
from submitter.schedules import service as schedules
from submitter.schedules.service import ScheduleNotFound
from submitter.ui.deps import RuntimeDep, UiUser, UiViewer
from submitter.ui.errors import message_of
from submitter.ui.forms import FormDep
from submitter.ui.nav import NavItem
from submitter.ui.render import UNPROCESSABLE, page

router = APIRouter(prefix="/ui/jobs", include_in_schema=False)
NAV = NavItem("Jobs", "/ui/jobs", order=10)

PAGE_SIZE = 50
#: Log lines shown when a job's page opens; the live stream goes on from the last one.
LOG_LINES = 1000
#: Artifacts a browser may show in place (images it renders without running anything).
#: Everything else is sent as a download, and never as this site's HTML or SVG.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
ACTIVE_STATES = frozenset(state.value for state in ACTIVE)
#: Metric charts on a job's page: how many, of what size, from at most this many values.
CHARTS, CHART_WIDTH, CHART_HEIGHT, CHART_VALUES = 12, 320, 90, 50_000


def _job_id(job_id: str, runtime: RuntimeDep, _: UiViewer) -> str:
    return service.resolve_id(runtime, job_id)


JobId = Annotated[str, Depends(_job_id)]


def _filters(
    runtime: RuntimeDep, state: str | None, kind: str | None, schedule: str | None, offset: str
) -> tuple[dict[str, Any], str | None]:
    """The list's filters from the query, each checked: a bad one is a message, not a 422."""
    problems = []
    chosen: dict[str, Any] = {"state": None, "kind": None, "schedule_id": None}
    if state:
        if state in JobState.__members__:
            chosen["state"] = state
        else:
            problems.append(f"unknown state {state!r}")
    if kind:
        chosen["kind"] = kind
    if schedule:
        try:
            chosen["schedule_id"] = schedules.get(runtime, schedule).id
        except ScheduleNotFound as error:
            problems.append(str(error.args[0]) if error.args else f"no schedule {schedule!r}")
            chosen["schedule_id"] = "-"  # matches no job
    chosen["offset"] = int(offset) if offset.isdigit() and len(offset) < 10 else 0
    return chosen, "; ".join(problems) or None


def _table_context(
    runtime: RuntimeDep, state: str | None, kind: str | None, schedule: str | None, offset: str
) -> dict[str, Any]:
    chosen, problem = _filters(runtime, state, kind, schedule, offset)
    items, total = service.list_jobs(
        runtime,
        state=chosen["state"],
        kind=chosen["kind"],
        schedule_id=chosen["schedule_id"],
        limit=PAGE_SIZE,
        offset=chosen["offset"],
    )
    query = {k: v for k, v in (("state", state), ("kind", kind), ("schedule", schedule)) if v}
    return {
        "jobs": [JobOut.model_validate(job) for job in items],
        "total": total,
        "offset": chosen["offset"],
        "page_size": PAGE_SIZE,
        "filters": {"state": state or "", "kind": kind or "", "schedule": schedule or ""},
        "query": urlencode(query),
        "table_url": "/ui/jobs/table?" + urlencode({**query, "offset": chosen["offset"]}),
        "problem": problem,
    }


@router.get("")
def list_page(
    request: Request,
    runtime: RuntimeDep,
    session: UiViewer,
    state: str | None = None,
    kind: str | None = None,
    schedule: str | None = None,
    offset: str = "0",
) -> HTMLResponse:
    context = _table_context(runtime, state, kind, schedule, offset)
    return page(
        request,
        "jobs/list.html",
        session,
        kinds=sorted(all_kinds()),
        states=[s.value for s in JobState],
        form={"kind": "echo", "spec": '{"message": "hello", "sleep_seconds": 2}', "deps": ""},
        form_error=None,
        **context,
    )


@router.get("/table")
def table_fragment(
    request: Request,
    runtime: RuntimeDep,
    session: UiViewer,
    state: str | None = None,
    kind: str | None = None,
    schedule: str | None = None,
    offset: str = "0",
) -> HTMLResponse:
    """The list's table alone: the list page polls it (htmx) for live state and progress."""
    context = _table_context(runtime, state, kind, schedule, offset)
    return page(request, "jobs/_table.html", session, **context)


def _parse_spec(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The spec field as a JSON object, refused as the API refuses a JSON body."""
    if not text:
        return {}, None

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except ValueError as error:
        return None, f"spec: not JSON: {error}"
    if not isinstance(value, dict):
        return None, "spec: must be a JSON object"
    problems = list(body_errors(json.dumps({"spec": value}).encode()))
    if problems:
        return None, message_of({"detail": problems})
    return value, None


@router.post("", response_model=None)
def submit(request: Request, runtime: RuntimeDep, session: UiUser, form: FormDep) -> Response:
    """Submit a job from the list page's form; open its page, or show the form again."""
    kind, spec_text = form.get("kind"), form.get("spec")
    deps = [d for d in form.get("depends_on").replace(",", " ").split() if d]
    spec, error = _parse_spec(spec_text)
    if spec is not None:
        try:
            resolved = [service.resolve_id(runtime, d) for d in deps]
            job, _ = service.submit(
                runtime, kind=kind, spec=spec, owner=session.principal.id, depends_on=resolved
            )
            return RedirectResponse(f"/ui/jobs/{job.id}", status_code=status.HTTP_303_SEE_OTHER)
        except service.InvalidJob as invalid:
            error = message_of({"detail": invalid.errors})
        except service.JobNotFound as missing:
            error = f"depends_on: {missing.args[0]}"
    context = _table_context(runtime, None, None, None, "0")
    return page(
        request,
        "jobs/list.html",
        session,
        status_code=UNPROCESSABLE,
        kinds=sorted(all_kinds()),
        states=[s.value for s in JobState],
        form={"kind": kind, "spec": spec_text, "deps": form.get("depends_on")},
        form_error=error,
        **context,
    )


def _job_context(runtime: RuntimeDep, job_id: str) -> dict[str, Any]:
    job = JobOut.model_validate(service.get_job(runtime, job_id))
    files = [ArtifactOut.model_validate(a) for a in artifacts.list_artifacts(runtime, job_id)]
    result = job.result if isinstance(job.result, dict) else {}
    model_link = None
    if job.kind == "train" and result.get("model_name") and result.get("version"):
        model_link = f"/ui/models/{quote(str(result['model_name']))}/versions/{result['version']}"
    return {
        "job": job,
        "artifacts": files,
        "active": job.state.value in ACTIVE_STATES,
        "model_link": model_link,
        "metric_charts": _metric_charts(runtime, job_id),
    }


def _metric_charts(runtime: RuntimeDep, job_id: str) -> list[dict[str, Any]]:
    """One small line chart (SVG polyline points, drawn here) per metric the job reported."""
    rows, _ = jobmetrics.list_metrics(runtime, job_id, name=None, limit=CHART_VALUES, offset=0)
    items = [{"name": r.name, "step": r.step, "value": r.value} for r in rows]
    return [
        {
            "name": one.name,
            "points": charts.svg_points(one, CHART_WIDTH, CHART_HEIGHT),
            "last": one.last,
            "step": one.steps[-1],
            "low": min(one.values),
            "high": max(one.values),
            "count": len(one.values),
        }
        for one in charts.series(items)[:CHARTS]
    ]


@router.get("/{job_id}")
def job_page(request: Request, job_id: JobId, runtime: RuntimeDep, session: UiViewer) -> Response:
    context = _job_context(runtime, job_id)
    lines, total = service.job_logs(runtime, job_id, limit=LOG_LINES)
    log = [LogLineOut.model_validate(line) for line in lines]
    return page(
        request,
        "jobs/detail.html",
        session,
        log=log,
        log_total=total,
        after=log[-1].id if log else 0,
        **context,
    )


@router.get("/{job_id}/summary")
def summary_fragment(
    request: Request, job_id: JobId, runtime: RuntimeDep, session: UiViewer
) -> HTMLResponse:
    """The job's facts, result and files: the page reloads this when the stream says the
    job changed."""
    return page(request, "jobs/_summary.html", session, **_job_context(runtime, job_id))


@router.get("/{job_id}/events")
def events(
    job_id: JobId,
    runtime: RuntimeDep,
    _: UiViewer,
    after: str = "0",
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The job's live events for the page's EventSource, which cannot send a bearer key:
    the API's stream (`submitter.jobs.events`) behind the session cookie."""
    service.get_job(runtime, job_id)  # 404 before the stream starts

    def cursor(text: str | None) -> int:
        return int(text) if text and text.isdigit() and len(text) < 19 else 0

    start = resume_cursor(cursor(after), cursor(last_event_id))
    return sse_response(job_events(runtime, job_id, after_log=start))


@router.post("/{job_id}/cancel")
def cancel(job_id: JobId, runtime: RuntimeDep, session: UiUser) -> RedirectResponse:
    """Cancel, then back to the job's page (a job that already ended is a 409 page)."""
    service.cancel(runtime, job_id, by=session.principal.name)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/{job_id}/artifacts/{name:path}")
def artifact(job_id: JobId, name: str, runtime: RuntimeDep, _: UiViewer) -> StreamingResponse:
    """One of the job's files, for a download link or an `<img>` (plots)."""
    if not name:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no artifact named")
    found = artifacts.get_artifact(runtime, job_id, name)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = media_type in INLINE_TYPES
    filename = quote(name.rsplit("/", 1)[-1])
    return StreamingResponse(
        runtime.store.iter_bytes(found.storage_key),
        media_type=media_type if inline else "application/octet-stream",
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f"{'inline' if inline else 'attachment'}; "
            f"filename*=UTF-8''{filename}",
            "X-Content-Type-Options": "nosniff",
            # A file a job wrote is the job's, not the console's: it runs nothing here.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=60",
        },
    )
