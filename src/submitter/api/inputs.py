"""Checks every request passes before a route sees it: a bounded body, and text and numbers
that every backend can store and every response can carry.

One mechanism for all routes rather than a check per field:

- `BodyLimit` (ASGI middleware) answers 413 for a body over `SUBMITTER_MAX_REQUEST_BYTES`,
  from `Content-Length` before reading, or as soon as the streamed bytes pass it. Routes
  that stream and bound their own body (the dataset upload) are exempt.
- `check_inputs` (an app-wide dependency) answers 422 naming the field for a NUL
  character or a lone surrogate in a path, query or JSON string (PostgreSQL's text and
  jsonb refuse them, SQLite took them: the same input must get the same answer on every
  backend), and for NaN, ±Infinity or an integer past 64 bits in a JSON body (not JSON
  numbers by RFC 8259; jsonb, SQL and numpy refuse them later with a 500).

The body check costs one scan of the bytes for a few markers; only a body holding one is
parsed again to find the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from submitter.api.errors import short_text

INT64 = 2**63
#: Bytes that may start something `check_inputs` refuses: an escaped NUL or surrogate,
#: a non-finite constant, a long digit run (a big integer or an overflowing exponent).
_SUSPECT = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|NaN|Infinity|\d{19,}|[eE][+-]?\d{3,}")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class BodyTooLarge(HTTPException):
    """413: the request body is over the limit (raised while it streams in)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body over {limit} bytes (SUBMITTER_MAX_REQUEST_BYTES)",
            headers={"Connection": "close"},
        )


class BodyLimit:
    """Bound every request body to `limit` bytes, except `exempt` (method, path) pairs."""

    def __init__(self, app: ASGIApp, limit: int, exempt: set[tuple[str, str]]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _reject(self.limit, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, bounded, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _reject(limit: int, send: Send) -> None:
    error = BodyTooLarge(limit)
    body = json.dumps({"detail": error.detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def check_inputs(request: Request) -> None:
    """Refuse (422, naming the field) text no backend can store and numbers JSON has not."""
    errors = [
        _error([place, name], reason, value)
        for place, params in (("path", request.path_params), ("query", request.query_params))
        for name, value in params.items()
        if isinstance(value, str) and (reason := _text_problem(value))
    ]
    content_type = request.headers.get("content-type", "")
    if not errors and "json" in content_type:
        body = await request.body()  # already read (and cached) for a route with a body
        if _SUSPECT.search(body):
            errors = list(body_errors(body))
    if errors:
        raise RequestValidationError(errors)


def _text_problem(value: str) -> str | None:
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return "contains a lone UTF-16 surrogate, which is not text"


class _Constant:
    def __init__(self, name: str) -> None:
        self.name = name


def body_errors(body: bytes) -> Iterator[dict[str, Any]]:
    """What a JSON body holds that no backend can store or JSON has not (NaN, Infinity, a
    NUL or lone surrogate in text, an integer past 64 bits), as 422 errors with their `loc`;
    nothing for a body that is not JSON at all. The console checks its forms with it too."""
    try:
        document = json.loads(body, parse_constant=_Constant)
    except ValueError:
        return  # not JSON at all: FastAPI answers that itself
    yield from _walk(document, ["body"])


def _walk(value: Any, loc: list[str | int]) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if reason := _text_problem(key):
                yield _error(loc, f"a key {reason}", key)
            yield from _walk(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, [*loc, index])
    elif isinstance(value, str):
        if reason := _text_problem(value):
            yield _error(loc, reason, value)
    elif isinstance(value, _Constant):
        yield _error(loc, f"{value.name} is not a JSON number; send null for a missing value")
    elif isinstance(value, float) and not math.isfinite(value):
        yield _error(loc, "number out of range of a 64-bit float")
    elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        yield _error(loc, "integer out of range of a 64-bit integer")


def _error(loc: list[str | int], reason: str, value: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"loc": loc, "msg": reason, "type": "value_error"}
    if isinstance(value, str):
        error["input"] = short_text(value)
    return error
