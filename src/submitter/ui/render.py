"""Templates and the responses the console sends: HTML with its security headers.

Jinja2 with autoescape on for every template: a job's message, a dataset's cell or a model
name is text, never markup. Pages carry a strict Content-Security-Policy (scripts, styles
and images from this server only, no inline script), are never cached (they hold the CSRF
token and live data) and may not be framed.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from submitter import __version__
from submitter.ui.deps import CSRF_FIELD, CSRF_HEADER, UiSession
from submitter.ui.nav import nav_for

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
#: The status of a form sent back with what is wrong in it (Starlette renamed its constant).
UNPROCESSABLE = 422
#: What a page shows for "no value".
DASH = "\u2013"
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _datetime(value: datetime | str | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: datetime | None, end: datetime | None = None) -> str:
    """`1 m 05 s` from start to end (or to now while it runs)."""
    if start is None:
        return DASH
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    stop = end or datetime.now(UTC)
    if stop.tzinfo is None:
        stop = stop.replace(tzinfo=UTC)
    seconds = max(0.0, (stop - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return DASH if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}f}".replace(",", " ")
    return str(value)


def _size(value: int | None) -> str:
    if value is None:
        return DASH
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _percent(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.0f} %"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its extension
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        dt=_datetime,
        duration=_duration,
        num=_number,
        size=_size,
        pretty=_pretty,
        percent=_percent,
        short=lambda value: str(value)[:8] if value else DASH,
    )
    env.globals.update(app_version=__version__, csrf_field_name=CSRF_FIELD, csrf_header=CSRF_HEADER)
    return env


templates = _environment()


def render_text(template: str, **context: Any) -> str:
    return templates.get_template(template).render(**context)


def page(
    request: Request,
    template: str,
    session: UiSession | None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render `template` for the signed-in `session` (None on the sign-in page)."""
    html = render_text(
        template,
        request=request,
        session=session,
        csrf=session.csrf if session else "",
        nav=nav_for(session.role if session else None),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code, headers={**PAGE_HEADERS, **(headers or {})})
