"""Schedules: the list (when each fires next, its last run and job), a form to create one,
a schedule's page (its spec and recent jobs), pause and resume, run now, and delete after a
confirmation page. The same services as `/api/v1/schedules`.

The create form builds the API's own request model, `ScheduleCreate`, so a bad cron, a cron
that never fires, a bad interval or a spec the job kind refuses is refused with the message
the API gives, shown in the form with what was typed.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from submitter.api.errors import validation_errors
from submitter.jobs import service as jobs
from submitter.jobs.registry import all_kinds
from submitter.jobs.schemas import JobOut
from submitter.schedules import service
from submitter.schedules.schemas import ScheduleCreate, ScheduleOut, ScheduleUpdate
from submitter.ui.deps import RuntimeDep, UiSession, UiUser, UiViewer
from submitter.ui.errors import message_of
from submitter.ui.forms import Form, FormDep
from submitter.ui.nav import NavItem
from submitter.ui.pages._ops import whole_number
from submitter.ui.pages.jobs import _parse_spec
from submitter.ui.render import UNPROCESSABLE, page

router = APIRouter(prefix="/ui/schedules", include_in_schema=False)
NAV = NavItem("Schedules", "/ui/schedules", order=50)

PAGE_SIZE = 50
#: Jobs of a schedule shown on its page; the jobs list filtered by it has them all.
RECENT_JOBS = 10
#: What the create form holds when it opens.
EMPTY_FORM: dict[str, Any] = {
    "name": "",
    "kind": "echo",
    "spec": '{"message": "hello from a schedule"}',
    "cron": "",
    "interval_seconds": "",
    "timezone": "",
    "enabled": True,
    "allow_overlap": False,
}


def _schedule(runtime: RuntimeDep, ref: str) -> ScheduleOut:
    return ScheduleOut.model_validate(service.get(runtime, ref))


def _list_context(runtime: RuntimeDep, offset: int) -> dict[str, Any]:
    items, total = service.list_schedules(runtime, limit=PAGE_SIZE, offset=offset)
    return {
        "schedules": [ScheduleOut.model_validate(s) for s in items],
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "kinds": sorted(all_kinds()),
    }


@router.get("")
def list_page(
    request: Request,
    runtime: RuntimeDep,
    session: UiViewer,
    offset: str = "0",
    deleted: str | None = None,
) -> HTMLResponse:
    return page(
        request,
        "schedules/list.html",
        session,
        form=EMPTY_FORM,
        form_error=None,
        deleted=deleted,
        **_list_context(runtime, whole_number(offset)),
    )


def _request_of(form: Form) -> dict[str, Any]:
    """The form as the API's JSON body: fields left empty are not sent (the API's defaults
    and its "exactly one of cron and interval" rule then apply as they do there)."""
    body: dict[str, Any] = {
        "name": form.get("name"),
        "kind": form.get("kind"),
        "enabled": bool(form.get("enabled")),
        "allow_overlap": bool(form.get("allow_overlap")),
    }
    for name in ("cron", "interval_seconds", "timezone"):
        if form.get(name):
            body[name] = form.get(name)
    return body


def _finite(text: str) -> bool:
    """False for a number field's `nan`, `inf` or `1e400`, which pydantic would read as a
    float and refuse with a confusing bound; anything else is pydantic's to judge."""
    try:
        return math.isfinite(float(text)) if text else True
    except ValueError:
        return True


def _create(
    runtime: RuntimeDep, session: UiSession, form: Form
) -> tuple[ScheduleOut | None, int, str]:
    """Create the schedule the form describes, or say why not with the API's status and
    message (422 for what the API refuses as a field, 409 for a name that is taken)."""
    spec, error = _parse_spec(form.get("spec"))
    if spec is None:
        return None, UNPROCESSABLE, error or "spec: not JSON"
    if not _finite(
        form.get("interval_seconds")
    ):  # JSON cannot carry these: the API never sees them
        return None, UNPROCESSABLE, "interval_seconds: Input should be a finite number"
    try:
        body = ScheduleCreate.model_validate({**_request_of(form), "spec": spec})
    except ValidationError as invalid:
        return None, UNPROCESSABLE, message_of({"detail": validation_errors(invalid.errors())})
    try:
        created = service.create(runtime, body, owner=session.principal.id)
    except jobs.InvalidJob as invalid_job:
        return None, UNPROCESSABLE, message_of({"detail": invalid_job.errors})
    except service.ScheduleConflict as conflict:
        return None, status.HTTP_409_CONFLICT, str(conflict)
    return ScheduleOut.model_validate(created), status.HTTP_201_CREATED, ""


@router.post("", response_model=None)
def create(request: Request, runtime: RuntimeDep, session: UiUser, form: FormDep) -> Response:
    """Create a schedule from the list page's form and open its page, or show the form
    again with the reason and what was typed."""
    created, status_code, error = _create(runtime, session, form)
    if created is not None:
        return RedirectResponse(
            f"/ui/schedules/{created.id}", status_code=status.HTTP_303_SEE_OTHER
        )
    typed = {
        **{name: form.raw(name) for name in ("name", "kind", "spec", "cron", "timezone")},
        "interval_seconds": form.raw("interval_seconds"),
        "enabled": bool(form.get("enabled")),
        "allow_overlap": bool(form.get("allow_overlap")),
    }
    return page(
        request,
        "schedules/list.html",
        session,
        status_code=status_code,
        form=typed,
        form_error=error,
        deleted=None,
        **_list_context(runtime, 0),
    )


@router.get("/{ref}")
def schedule_page(
    request: Request, ref: str, runtime: RuntimeDep, session: UiViewer
) -> HTMLResponse:
    schedule = _schedule(runtime, ref)
    items, total = jobs.list_jobs(runtime, schedule_id=schedule.id, limit=RECENT_JOBS, offset=0)
    return page(
        request,
        "schedules/detail.html",
        session,
        schedule=schedule,
        jobs=[JobOut.model_validate(job) for job in items],
        jobs_total=total,
    )


def _back(form: Form, schedule_id: str) -> str:
    """Where a button's form returns: the page it was pressed on (the list or the
    schedule's page), and only a page of this section: never another site."""
    target = form.get("back")
    if target == "/ui/schedules" or target.startswith("/ui/schedules?"):
        return target
    return f"/ui/schedules/{schedule_id}"


def _set_enabled(runtime: RuntimeDep, ref: str, form: Form, enabled: bool) -> RedirectResponse:
    changed = service.change(runtime, ref, ScheduleUpdate(enabled=enabled))
    return RedirectResponse(_back(form, changed.id), status_code=status.HTTP_303_SEE_OTHER)


@router.post("/{ref}/pause")
def pause(ref: str, runtime: RuntimeDep, _: UiUser, form: FormDep) -> RedirectResponse:
    """Stop firing (no next run) until resumed; the schedule and its jobs stay."""
    return _set_enabled(runtime, ref, form, enabled=False)


@router.post("/{ref}/resume")
def resume(ref: str, runtime: RuntimeDep, _: UiUser, form: FormDep) -> RedirectResponse:
    """Fire again: the next run is computed from now (missed runs are not made up)."""
    return _set_enabled(runtime, ref, form, enabled=True)


@router.post("/{ref}/run")
def run_now(ref: str, runtime: RuntimeDep, _: UiUser) -> RedirectResponse:
    """Submit the schedule's job now, outside its rhythm, and open the job's page."""
    job = service.run_now(runtime, ref)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/{ref}/delete")
def confirm_delete(
    request: Request, ref: str, runtime: RuntimeDep, session: UiUser
) -> HTMLResponse:
    """The confirmation page: deleting is one more click, and works without script."""
    return page(request, "schedules/delete.html", session, schedule=_schedule(runtime, ref))


@router.post("/{ref}/delete")
def delete(ref: str, runtime: RuntimeDep, _: UiUser) -> RedirectResponse:
    """Remove the schedule (its jobs stay) and go back to the list, which says so."""
    name = _schedule(runtime, ref).name
    service.delete(runtime, ref)
    return RedirectResponse(f"/ui/schedules?deleted={name}", status_code=status.HTTP_303_SEE_OTHER)
