"""Beat tasks: the reconciler, the HPC monitor and clean-up and the schedule check, each
with its interval, when it last ran and how long ago, and whether it is `late` (beat seems
to be down) or `failing`. The same service as `/api/v1/tasks`; the table refreshes itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from submitter.ui.deps import RuntimeDep, UiViewer
from submitter.ui.nav import NavItem
from submitter.ui.pages import _ops  # noqa: F401  (the templates' |ago and |every)
from submitter.ui.render import page
from submitter.worker.beat_status import LATE_AFTER_INTERVALS, list_tasks

router = APIRouter(prefix="/ui/tasks", include_in_schema=False)
NAV = NavItem("Beat tasks", "/ui/tasks", order=70)


def _context(runtime: RuntimeDep) -> dict[str, Any]:
    tasks = list_tasks(runtime)
    states = {task.state for task in tasks}
    return {
        "tasks": tasks,
        "never": bool(tasks) and states == {"never"},
        "late": "late" in states,
        "failing": "failing" in states,
        "late_after": LATE_AFTER_INTERVALS,
    }


@router.get("")
def tasks_page(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    return page(request, "tasks/list.html", session, **_context(runtime))


@router.get("/table")
def table_fragment(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    """The table alone, polled by the page (htmx): a late task shows up without a reload."""
    return page(request, "tasks/_table.html", session, **_context(runtime))
