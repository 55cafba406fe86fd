"""Errors on console pages are pages: the API's answers, rendered as HTML.

The app's exception handlers (404 for an unknown job, 409, 422 naming the field, 503 when
the database is away, ...) answer JSON. For a request under `/ui` that wants HTML, each is
wrapped: the API's handler decides the status and the message, as for the API, and the
console renders them in its error page. So a page never answers 500 where the API would
not, and both say the same thing. Script requests (the upload, `Accept: application/json`)
keep the JSON; htmx requests get a short fragment; a request without a session is sent to
the sign-in page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from submitter.ui.deps import COOKIE, COOKIE_PATH, NotSignedIn, optional_session
from submitter.ui.render import PAGE_HEADERS, page, render_text

PREFIX = "/ui"
Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Refused",
    502: "Cluster unreachable",
    503: "Unavailable",
}


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def wants_html(request: Request) -> bool:
    """A browser's navigation or form (or a client that takes anything), not a script that
    asked for JSON or an EventSource (which gets the API's JSON answer and stops)."""
    accept = request.headers.get("accept", "").strip()
    return not accept or "text/html" in accept or accept == "*/*"


def message_of(body: Any) -> str:
    """The API's error `detail` as one line: a string, or each 422 field as `field: msg`."""
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
                field = ".".join(loc)
                parts.append(f"{field}: {item.get('msg', '')}" if field else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail) if detail is not None else ""


async def error_page(request: Request, status_code: int, message: str) -> Response:
    """The error page (or, for htmx, a fragment) for `status_code` with `message`."""
    title = _TITLES.get(status_code, "Error")
    if request.headers.get("hx-request"):
        html = render_text("_error_fragment.html", title=title, message=message)
        return HTMLResponse(html, status_code, headers=PAGE_HEADERS)
    session = None
    if status_code != 503:  # with the database away, no nav rather than a wait
        try:
            session = await run_in_threadpool(optional_session, request, request.app.state.runtime)
        except Exception:  # could not tell who it is: the page without the nav
            session = None
    return page(
        request,
        "error.html",
        session,
        status_code=status_code,
        title=title,
        code=status_code,
        message=message,
    )


def _login_redirect(request: Request, error: NotSignedIn) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    location = f"{PREFIX}/login?next={quote(target, safe='')}"
    if error.reason:
        location += "&expired=1"
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=401, headers={"HX-Redirect": location})
    elif not wants_html(request):
        response = Response(
            json.dumps({"detail": str(error)}),
            status_code=401,
            media_type="application/json",
        )
    else:
        response = RedirectResponse(location, status_code=303)
    if error.reason:  # a revoked key: forget it
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


def _wrap(original: Handler) -> Handler:
    async def handler(request: Request, error: Exception) -> Response:
        result = original(request, error)
        response = await result if asyncio.iscoroutine(result) else result
        assert isinstance(response, Response)
        if not is_console(request) or not wants_html(request) or response.status_code < 400:
            return response
        try:
            body = json.loads(bytes(response.body))
        except (ValueError, AttributeError):
            return response
        html = await error_page(request, response.status_code, message_of(body))
        for name in ("retry-after", "www-authenticate"):
            if name in response.headers:
                html.headers[name] = response.headers[name]
        return html

    return handler


def install(app: FastAPI) -> None:
    """Wrap every handler the app has (call after the API installed its own)."""
    for error_type, original in list(app.exception_handlers.items()):
        if isinstance(error_type, type):
            app.exception_handlers[error_type] = _wrap(original)

    async def not_signed_in(request: Request, error: Exception) -> Response:
        assert isinstance(error, NotSignedIn)
        return _login_redirect(request, error)

    app.add_exception_handler(NotSignedIn, not_signed_in)
