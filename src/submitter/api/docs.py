"""`/docs` (Swagger UI) and `/redoc`, with their scripts and styles served from the package.

FastAPI's own pages load Swagger UI and Redoc from a CDN (and Redoc its fonts from Google),
so on an offline cluster or lab network `/docs` is a blank page. These are the same pages,
built by FastAPI's `get_swagger_ui_html` / `get_redoc_html` (its documented self-hosting
recipe), pointing at files vendored in `api/static/` (versions, licenses and how to
reproduce them: `api/static/README.md`, `scripts/vendor_assets.sh`). The app is created
with `docs_url=None, redoc_url=None` so that FastAPI's CDN pages are not added too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
#: Where the vendored files are served; under /docs so it cannot meet another mount.
ASSETS_URL = "/docs/static"


def install(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their files (`/docs/static/...`) on `app`."""
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/swagger/favicon-32x32.png",
            # No request to swagger.io's online validator (its badge) from the page.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/swagger/favicon-32x32.png",
            with_google_fonts=False,
        )


def _root(request: Request) -> str:
    """The path the app is mounted at behind a proxy (`--root-path`), as FastAPI's own
    docs pages prefix their URLs with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")
