"""Form bodies of console pages, read once and checked like every other input.

The app-wide input check (`api/inputs.py`) looks at paths, queries and JSON bodies; a form
field could still carry a NUL character, which PostgreSQL refuses with a 500. Here every
field is refused with a 422 naming it before a route sees it, and only text fields are
kept (the dataset upload streams its file and never comes here).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from submitter.api.errors import short_text

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
#: Longest form field kept (characters): a spec, a few CSV rows to predict.
MAX_FIELD_CHARS = 1_000_000


async def read_form(request: Request) -> dict[str, list[str]]:
    """Every text field of a urlencoded or multipart form, by name, in order."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return {}
    fields: dict[str, list[str]] = {}
    errors = []
    form = await request.form()
    for name, value in form.multi_items():
        if not isinstance(value, str):
            continue
        if _BAD_TEXT.search(name) or _BAD_TEXT.search(value):
            errors.append(
                {
                    "loc": ["body", short_text(name.replace("\x00", "\\x00"))],
                    "msg": "contains a NUL character or a lone surrogate, which is not text",
                    "type": "value_error",
                }
            )
        elif len(value) > MAX_FIELD_CHARS:
            errors.append(
                {
                    "loc": ["body", name],
                    "msg": f"longer than {MAX_FIELD_CHARS} characters",
                    "type": "value_error",
                }
            )
        fields.setdefault(name, []).append(value)
    if errors:
        raise RequestValidationError(errors)
    return fields


class Form:
    """A read form: `form.get("name")` is the first value stripped, `form.all("models")`
    every value."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0].strip() if values else default

    def raw(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return [value.strip() for value in self.fields.get(name, []) if value.strip()]


async def _form(request: Request) -> Form:
    return Form(await read_form(request))


FormDep = Annotated[Form, Depends(_form)]
