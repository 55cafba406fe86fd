"""Error responses: domain exceptions → status codes, and 422s that can always be written.

An error response must never fail itself. FastAPI's own 422 handler echoes each rejected
value back; a value JSON cannot carry (a lone surrogate, NaN, Infinity) then made the
handler raise and the client got a 500, and a 50 MB rejected value came back as a 105 MB
body. `validation_errors()` makes every echoed value JSON-safe and short.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

#: Longest echoed string (characters) in an error detail; longer ones are cut with "…".
MAX_ECHO_CHARS = 100
#: At most this many items of an echoed list or object, this deep.
MAX_ECHO_ITEMS = 10
MAX_ECHO_DEPTH = 3


class ErrorOut(BaseModel):
    """Every error but a 422: one sentence that names what is wrong."""

    detail: str


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query or path, then the field.")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(BaseModel):
    """A 422: each refused input with where it is and why."""

    detail: list[FieldErrorOut]


_DESCRIPTIONS = {
    400: "The body cannot be read (e.g. not UTF-8).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not do this.",
    404: "Not found; the message names what.",
    409: "The resource is in a state that does not allow this; the message says which.",
    422: "An input is refused: each error names the field and why.",
    413: "The body is over SUBMITTER_MAX_REQUEST_BYTES (uploads: SUBMITTER_MAX_UPLOAD_BYTES).",
    502: "A cluster could not be reached or refused the connection.",
    503: "A dependency (database, broker or store) is unavailable; retry after Retry-After.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error codes a route may answer, with the body they carry."""
    return {
        code: {
            "model": ValidationErrorOut if code == 422 else ErrorOut,
            "description": _DESCRIPTIONS[code],
        }
        for code in codes
    }


#: What any `/api/v1` route may answer, whatever it does.
API_ERRORS = responses(400, 401, 403, 413, 503)


def short_text(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`value` cut to `limit` characters, with lone surrogates written as `\\udXXX` so that
    the result always encodes as UTF-8."""
    cut = value[:limit] + ("…" if len(value) > limit else "")
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def echo(value: Any, depth: int = 0) -> Any:
    """A short, JSON-safe rendering of a rejected input value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else short_text(str(value), 30)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return short_text(value)
    if isinstance(value, bytes | bytearray):
        return short_text(bytes(value[: MAX_ECHO_CHARS * 4]).decode("utf-8", "replace"))
    if depth >= MAX_ECHO_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())
        shown = {short_text(str(k), 40): echo(v, depth + 1) for k, v in items[:MAX_ECHO_ITEMS]}
        if len(items) > MAX_ECHO_ITEMS:
            shown["…"] = f"{len(items) - MAX_ECHO_ITEMS} more"
        return shown
    if isinstance(value, Iterable):
        listed = []
        for index, item in enumerate(value):
            if index == MAX_ECHO_ITEMS:
                listed.append("…")
                break
            listed.append(echo(item, depth + 1))
        return listed
    return short_text(str(value))


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic-style error dicts made safe to send: `loc`, `msg`, `type`, a short `input`
    and a JSON-safe `ctx`."""
    safe = []
    for error in errors:
        item: dict[str, Any] = {
            "loc": [p if isinstance(p, int) else short_text(str(p), 200) for p in error["loc"]],
            "msg": short_text(str(error.get("msg", "")), 500),
            "type": str(error.get("type", "value_error")),
        }
        if "input" in error:
            item["input"] = echo(error["input"])
        if error.get("ctx"):
            item["ctx"] = {str(k): echo(v) for k, v in error["ctx"].items()}
        safe.append(item)
    return safe


def unprocessable(errors: Iterable[Mapping[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": validation_errors(errors)}, status_code=422)


def field_error(location: str, field: str, reason: str) -> RequestValidationError:
    """A 422 naming `location.field`, the same shape as FastAPI's own."""
    return RequestValidationError(
        [{"loc": [location, field], "msg": reason, "type": "value_error"}]
    )


def _message(error: Exception) -> str:
    # str(KeyError("x")) is "'x'"; the message is the first argument, as written.
    return str(error.args[0]) if error.args else str(error)


def install(
    app: FastAPI,
    *,
    statuses: Mapping[type[Exception], int],
    field_errors: Mapping[type[Exception], str],
) -> None:
    """Answer the domain exceptions in `statuses` as `{"detail": message}` with their code;
    those in `field_errors` (which carry `field` and `reason`) as a 422 whose `loc` is
    `[location, field]`; and every validation error with a 422 that cannot fail."""

    def detail(status_code: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, error: Exception) -> JSONResponse:
            return JSONResponse({"detail": short_text(_message(error), 1000)}, status_code)

        return handler

    def field(location: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, error: Exception) -> JSONResponse:
            name = str(getattr(error, "field", ""))
            reason = getattr(error, "reason", None) or str(error)
            return unprocessable(field_error(location, name, reason).errors())

        return handler

    async def invalid(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return unprocessable(error.errors())

    for error_type, status_code in statuses.items():
        app.add_exception_handler(error_type, detail(status_code))
    for error_type, location in field_errors.items():
        app.add_exception_handler(error_type, field(location))
    app.add_exception_handler(RequestValidationError, invalid)
