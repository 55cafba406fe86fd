"""The console's pages: one module per resource, found here at start-up.

A page module has a `router` (an `APIRouter` with `include_in_schema=False`, prefix
`/ui/<resource>`) and, to appear in the navigation bar, `NAV = NavItem(...)`. Its templates
live in `templates/<resource>/` and extend `base.html`. Adding a page is adding that module
and its templates: nothing else lists them. For example `pages/workers.py`:

    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse

    from submitter.roles import Role
    from submitter.ui.deps import RuntimeDep, UiViewer
    from submitter.ui.nav import NavItem
    from submitter.ui.render import page

    router = APIRouter(prefix="/ui/workers", include_in_schema=False)
    NAV = NavItem("Workers", "/ui/workers", order=50)  # role=Role.admin to hide it

    @router.get("")
    def workers_page(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
        return page(request, "workers/list.html", session, workers=...)  # a service's answer

and `templates/workers/list.html` starting `{% extends "base.html" %}` with a `main` block.
`UiViewer` / `UiUser` / `UiAdmin` are the roles (403 page below it, sign-in redirect without
a session, CSRF checked on every POST); a form that changes state includes
`{{ csrf_input() }}` (from `macros.html`) and reads its fields with `FormDep`. Raise the
services' own exceptions (`...NotFound`, `...Conflict`): the API's handlers pick the status
and message, and the console renders them as its error page.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    """Every page module of this package, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}"))
    return found
