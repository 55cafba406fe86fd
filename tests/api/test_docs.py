"""`/docs` and `/redoc` work offline: their pages reference only the API's own URLs, and
every file they load is served from the package, as vendored (api/static/SHA256SUMS)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from submitter.api.app import create_app
from submitter.api.docs import STATIC_DIR
from submitter.config import load_settings

CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = load_settings(home=str(tmp_path_factory.mktemp("docs")), log_format="json")
    with TestClient(create_app(settings)) as client:
        yield client


def _references(html: str) -> list[str]:
    """Every URL the page loads: `src=`, `href=`, Swagger UI's `url:`, Redoc's `spec-url=`."""
    pattern = r'(?:src|href|spec-url)="([^"]*)"|url: \'([^\']*)\''
    return [m.group(1) or m.group(2) for m in re.finditer(pattern, html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_another_host(api: TestClient, page: str) -> None:
    response = api.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html, html
    urls = _references(html)
    assert len(urls) >= 3, urls  # the script, the favicon, the OpenAPI document (+ css)
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    for url in urls:
        asset = api.get(url)
        assert asset.status_code == 200, url
        if url == "/openapi.json":
            assert asset.json()["paths"]
            continue
        suffix = Path(url).suffix
        assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url
        vendored = STATIC_DIR / url.removeprefix("/docs/static/")
        assert asset.content == vendored.read_bytes()
    if page == "/docs":
        assert "validatorUrl" in html and "swagger-ui-bundle.js" in html
        assert "swagger-ui.css" in html


def test_the_vendored_files_are_those_recorded_with_their_version_and_license() -> None:
    sums = (STATIC_DIR / "SHA256SUMS").read_text().splitlines()
    recorded: dict[str, str] = {}
    for line in sums:
        digest, name = line.split(maxsplit=1)
        recorded[name] = digest
    files = {p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert set(recorded) == files - {"SHA256SUMS", "README.md"}
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name
    for folder in ("swagger", "redoc"):
        assert re.fullmatch(r"\d+\.\d+\.\d+\n", (STATIC_DIR / folder / "VERSION").read_text())
        assert (STATIC_DIR / folder / "LICENSE").is_file()
    assert "Apache License" in (STATIC_DIR / "swagger" / "LICENSE").read_text()


def test_behind_a_proxy_prefix_the_pages_use_it(tmp_path: Path) -> None:
    settings = load_settings(home=str(tmp_path), log_format="json")
    with TestClient(create_app(settings), root_path="/submitter") as client:
        html = client.get("/docs").text
    urls = _references(html)
    assert urls and all(url.startswith("/submitter/") for url in urls), urls
