"""Workers: every `submitter worker` seen in the last day, with its host, state (online,
offline, stopped), last heartbeat, queues and the jobs running on it. The same service as
`/api/v1/workers` (the `workers` table, so it works on every broker); the table refreshes
itself every few seconds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from submitter.ui.deps import RuntimeDep, UiViewer
from submitter.ui.nav import NavItem
from submitter.ui.pages import _ops  # noqa: F401  (the templates' |ago and |every)
from submitter.ui.render import page
from submitter.worker.presence import heartbeat_seconds, list_workers

router = APIRouter(prefix="/ui/workers", include_in_schema=False)
NAV = NavItem("Workers", "/ui/workers", order=60)


def _context(runtime: RuntimeDep) -> dict[str, Any]:
    workers = list_workers(runtime)
    return {
        "workers": workers,
        "online": sum(1 for w in workers if w.state == "online"),
        "heartbeat": heartbeat_seconds(runtime),
    }


@router.get("")
def workers_page(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    return page(request, "workers/list.html", session, **_context(runtime))


@router.get("/table")
def table_fragment(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    """The table alone: the page polls it (htmx) so that states and jobs stay current."""
    return page(request, "workers/_table.html", session, **_context(runtime))
