"""The web console at `/ui`: server-rendered pages (Jinja2) with a little vendored htmx.

`install(app)` adds it to the API app: the page routers (none in the OpenAPI document),
the static files, and HTML error pages for console requests. Pages call the same services
as the API routes; everything they load ships in the package (no CDN, no build step).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

#: The console's dataset upload streams its body and bounds it itself, as the API's does.
UPLOAD_PATH = "/ui/datasets/upload"


def install(app: FastAPI) -> None:
    """Mount the console on `app`. Call it last: it wraps the app's error handlers."""
    from submitter.ui import errors, pages
    from submitter.ui.nav import register
    from submitter.ui.render import STATIC_DIR

    for module in pages.modules():
        app.include_router(module.router)
        nav = getattr(module, "NAV", None)
        if nav is not None:
            register(nav)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    errors.install(app)
