"""Service logs (admin): the recent records of every service process (api, worker, beat,
flower, on every host) from the `service_logs` table, newest first, filterable by service,
host, level and job id, with "load newer" or live follow. The same service as
`GET /api/v1/logs/{service}` (`servicelogs.list_logs`).

The filters are a GET form: they are not secrets, and a filtered view is a URL to share.
Following asks for the records after the newest id shown (`after_id`, in id order: ids
only grow, so none is missed whatever the hosts' clocks say) and puts them on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from submitter.jobs import service as jobs
from submitter.roles import Role
from submitter.servicelogs import service as servicelogs
from submitter.servicelogs.schemas import LEVELS, SERVICES, ServiceLogOut
from submitter.ui.deps import RuntimeDep, UiAdmin
from submitter.ui.nav import NavItem
from submitter.ui.pages._ops import whole_number
from submitter.ui.render import page

router = APIRouter(prefix="/ui/logs", include_in_schema=False)
NAV = NavItem("Logs", "/ui/logs", order=90, role=Role.admin)

PAGE_SIZE = 100
#: Records one "load newer" (or one poll while following) adds at most; the next one
#: goes on from the last of them, so a burst arrives over a few polls, in order.
NEWER_MAX = 200
#: The API's bounds on these filters (`Query(max_length=...)`).
MAX_HOST = 255
MAX_JOB_ID = 64
FOLLOW_SECONDS = 2


@dataclass
class Filters:
    """The filters as typed (shown back in the form) and the query they make.

    A filter the API would refuse is a message above the table, not a 422 page: an
    unknown service or level is ignored (all of them are shown), a host or job id longer
    than the API takes matches nothing."""

    service: str = ""
    host: str = ""
    level: str = ""
    job_id: str = ""
    problems: list[str] = field(default_factory=list)
    query: servicelogs.LogQuery | None = None  # None: matches nothing

    def params(self) -> dict[str, str]:
        """The non-empty filters, for links that keep them."""
        values = {
            "service": self.service,
            "host": self.host,
            "level": self.level,
            "job_id": self.job_id,
        }
        return {name: value for name, value in values.items() if value and value != "all"}


def _filters(
    runtime: RuntimeDep,
    service: str | None,
    host: str | None,
    level: str | None,
    job_id: str | None,
) -> Filters:
    typed = Filters(
        service=(service or "").strip(),
        host=(host or "").strip(),
        level=(level or "").strip().upper(),
        job_id=(job_id or "").strip(),
    )
    chosen: dict[str, Any] = {}
    matches_nothing = False
    if typed.service and typed.service != "all":
        if typed.service in SERVICES:
            chosen["service"] = typed.service
        else:
            typed.problems.append(
                f"unknown service {typed.service!r}: one of all, {', '.join(SERVICES)}"
            )
    if typed.level:
        if typed.level in LEVELS:
            chosen["level"] = typed.level
        else:
            typed.problems.append(f"unknown level {typed.level!r}: one of {', '.join(LEVELS)}")
    if typed.host:
        if len(typed.host) > MAX_HOST:
            typed.problems.append(f"host: longer than {MAX_HOST} characters")
            matches_nothing = True
        chosen["host"] = typed.host
    if typed.job_id:
        if len(typed.job_id) > MAX_JOB_ID:
            typed.problems.append(f"job id: longer than {MAX_JOB_ID} characters")
            matches_nothing = True
        else:
            chosen["job_id"] = _job_id(runtime, typed)
    if not matches_nothing:
        typed.query = servicelogs.LogQuery(**chosen)
    return typed


def _job_id(runtime: RuntimeDep, typed: Filters) -> str:
    """A job id as typed, or the job a short prefix stands for (people copy the 8
    characters the console shows). A prefix that matches no job is kept as it is: records
    outlive jobs."""
    try:
        return jobs.resolve_id(runtime, typed.job_id)
    except jobs.AmbiguousJobId as error:
        typed.problems.append(str(error.args[0]) if error.args else str(error))
    except jobs.JobNotFound:
        pass
    return typed.job_id.lower()


def _newer_url(filters: Filters, after_id: int, follow: bool, added: int = 0) -> str:
    """The next "load newer" request: after the newest id shown, counting the records
    added on top so far (the page's total was counted when it loaded)."""
    params = {**filters.params(), "after_id": str(after_id), "added": str(added)}
    if follow:
        params["follow"] = "1"
    return "/ui/logs/newer?" + urlencode(params)


@router.get("")
def logs_page(
    request: Request,
    runtime: RuntimeDep,
    session: UiAdmin,
    service: str | None = None,
    host: str | None = None,
    level: str | None = None,
    job_id: str | None = None,
    offset: str = "0",
    follow: str | None = None,
) -> HTMLResponse:
    filters = _filters(runtime, service, host, level, job_id)
    start = whole_number(offset)
    records: list[ServiceLogOut] = []
    total = 0
    if filters.query is not None:
        records, total = servicelogs.list_logs(
            runtime, filters.query, order="newest", limit=PAGE_SIZE, offset=start
        )
    following = bool(follow) and start == 0
    after_id = records[0].id if records and start == 0 else 0
    query = urlencode(filters.params())
    return page(
        request,
        "logs/list.html",
        session,
        filters=filters,
        services=SERVICES,
        levels=list(LEVELS),
        records=records,
        hosts=sorted({r.host for r in records}),
        total=total,
        offset=start,
        page_size=PAGE_SIZE,
        query=query,
        following=following,
        follow_seconds=FOLLOW_SECONDS,
        newer_url=_newer_url(filters, after_id, following) if start == 0 else None,
        newer_count=0,
        link=lambda **changes: _link(filters, **changes),
    )


@router.get("/newer")
def newer_fragment(
    request: Request,
    runtime: RuntimeDep,
    session: UiAdmin,
    after_id: str = "0",
    service: str | None = None,
    host: str | None = None,
    level: str | None = None,
    job_id: str | None = None,
    follow: str | None = None,
    added: str = "0",
) -> HTMLResponse:
    """The records after `after_id` (at most `NEWER_MAX`, oldest of them first, then put
    newest first), preceded by the row that asks for the next ones: it replaces itself."""
    filters = _filters(runtime, service, host, level, job_id)
    last = whole_number(after_id)
    records: list[ServiceLogOut] = []
    if filters.query is not None:
        query = replace(filters.query, after_id=last)
        records, _ = servicelogs.list_logs(runtime, query, order="oldest", limit=NEWER_MAX)
    if records:
        last = records[-1].id
    following = bool(follow)
    count = whole_number(added) + len(records)
    return page(
        request,
        "logs/_newer.html",
        session,
        records=list(reversed(records)),
        following=following,
        follow_seconds=FOLLOW_SECONDS,
        newer_url=_newer_url(filters, last, following, count),
        newer_count=count,
        link=lambda **changes: _link(filters, **changes),
    )


def _link(filters: Filters, **changes: str) -> str:
    """This view's URL with some filters changed (a host or job id clicked in the table)."""
    params = {**filters.params(), **changes}
    return "/ui/logs?" + urlencode({k: v for k, v in params.items() if v})
