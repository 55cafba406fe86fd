"""Fixtures of the web console tests.

Plain HTTP tests use the real app in-process (FastAPI's TestClient) on the embedded backend,
one per module, without a worker. The browser tests drive Debian's Chromium with Playwright
(from PyPI, never its own browser download) against a real `submitter api` and
`submitter worker` on the embedded backend, started once per module like the other servers
of the suite; each test gets a fresh browser context (no cookies) and saves a screenshot of
every page it checks under its tmp folder. `SUBMITTER_TEST_SCREENSHOT_DIR=docs/img` also
copies the README's screenshots there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from submitter.runtime import Runtime
from submitter.security import Role, create_key
from tests.conftest import Backend, Process, Stack, eventually, make_backend, make_stack
from tests.services import _free_ports

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR_ENV = "SUBMITTER_TEST_SCREENSHOT_DIR"


# ---- in-process app, for the HTTP tests -------------------------------------------------


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real app on a fresh embedded backend, no worker: jobs stay queued."""
    with (
        make_backend("embedded", tmp_path_factory.mktemp("ui")) as backend,
        make_stack(backend, worker=False, beat=False) as stack,
    ):
        yield stack


def sign_in(stack: Stack, role: str) -> TestClient:
    """A client of its own (its own cookie jar) signed in with `role`'s key."""
    client = TestClient(stack.api.app)
    response = client.post("/ui/login", data={"key": stack.keys[role]}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


# ---- a real api + worker, and Chromium, for the browser tests --------------------------


def _chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing and we are root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and only root may apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    if not CHROMIUM.exists():
        pytest.skip(f"apt-get install chromium did not provide {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """A running `submitter api` + `submitter worker` and a key per role."""

    url: str
    backend: Backend
    keys: dict[str, str]
    processes: list[Process]

    def api(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=30,
        )

    def submit(self, kind: str, spec: dict[str, Any], role: str = "admin") -> dict[str, Any]:
        with self.api(role) as client:
            response = client.post("/api/v1/jobs", json={"kind": kind, "spec": spec})
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        with self.api() as client:
            found: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        return found

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(30)}" for p in self.processes)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    port = _free_ports()[0]
    with make_backend("embedded", tmp_path_factory.mktemp("console")) as backend:
        backend.env.update(SUBMITTER_API_HOST="127.0.0.1", SUBMITTER_API_PORT=str(port))
        runtime = Runtime(backend.settings)
        keys = {"admin": backend.admin_key}
        try:
            with runtime.transaction() as session:
                for role in (Role.user, Role.viewer):
                    name = f"{role.value}-{secrets.token_hex(3)}"
                    _, keys[role.value] = create_key(session, name, role)
        finally:
            runtime.close()
        processes = [
            Process(backend, "api"),
            Process(backend, "worker", "--concurrency=2"),
        ]
        made = Console(f"http://127.0.0.1:{port}", backend, keys, processes)
        try:
            eventually(lambda: _ready(made.url), timeout=90)
            yield made
        finally:
            for process in processes:
                process.stop()


@dataclass
class Browsing:
    """One test's browser context and page, its screenshots and the page's errors."""

    console: Console
    context: Any
    page: Any
    folder: Path
    errors: list[str] = field(default_factory=list)
    shots: dict[str, Path] = field(default_factory=dict)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.console.url + path)

    def sign_in(self, role: str) -> None:
        self.goto("/ui/login")
        self.page.fill("input[name=key]", self.console.keys[role])
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/ui/jobs")

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.shots[name] = path
        return path

    @contextmanager
    def step(self, name: str, *, full_page: bool = True) -> Iterator[None]:
        """Check one page: a screenshot of it after, and on failure one named in the error."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            yield
        except (AssertionError, PlaywrightError) as error:
            try:
                path: Path | str = self.shot(f"{name}-FAILED")
            except PlaywrightError as shot_error:
                path = f"(no screenshot: {shot_error})"
            raise AssertionError(
                f"{name}: {error}\nscreenshot: {path}\n{self.console.tails()}"
            ) from error
        self.shot(name, full_page=full_page)

    def keep_for_readme(self, name: str, target: str) -> None:
        """Copy screenshot `name` to $SUBMITTER_TEST_SCREENSHOT_DIR/target, if set."""
        folder = os.environ.get(SCREENSHOT_DIR_ENV)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.shots[name], Path(folder) / target)


@pytest.fixture
def browsing(browser: Any, console: Console, tmp_path: Path) -> Iterator[Browsing]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    made = Browsing(console, context, page, tmp_path)
    page.on("pageerror", lambda error: made.errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            made.errors.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    try:
        yield made
    finally:
        context.close()
