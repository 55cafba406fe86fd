"""Test stacks on real services: the embedded default, PostgreSQL + Redis + S3, PostgreSQL +
RabbitMQ.

A *backend* is a set of SUBMITTER_* settings pointing at fresh, private resources (a new
PostgreSQL database, a flushed Redis DB, a new RabbitMQ vhost, or a temporary SQLite home).
A *stack* is a backend plus real `submitter worker` and `submitter beat` processes; the API
runs in-process through FastAPI's TestClient (the real app, no mocks). Servers that are not
running are started by tests/services.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from submitter.api.app import create_app
from submitter.config import Settings, load_settings
from submitter.db.migrate import upgrade
from submitter.runtime import Runtime
from submitter.security import Role, create_key
from tests.services import (
    postgres_database,
    rabbitmq_vhost,
    redis_database,
    s3_server,
    stop_private_servers,
)

BACKENDS = ("embedded", "postgres-redis", "postgres-rabbitmq")
TERMINAL = {"succeeded", "failed", "cancelled"}

# Short timings so that recovery paths run within seconds in tests.
FAST_TIMINGS = {
    "SUBMITTER_JOB_LEASE_SECONDS": "3",
    "SUBMITTER_REQUEUE_AFTER_SECONDS": "3",
    "SUBMITTER_SCHEDULER_TIMES": "1|1|0.5|1",
    "SUBMITTER_CANCEL_GRACE_SECONDS": "2",
    "SUBMITTER_LOG_FORMAT": "json",
}


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    home: Path

    @property
    def settings(self) -> Settings:
        overrides: dict[str, Any] = {
            k.removeprefix("SUBMITTER_").lower(): v for k, v in self.env.items()
        }
        if "clusters" in overrides:  # complex values come as JSON in the environment
            overrides["clusters"] = json.loads(overrides["clusters"])
        return load_settings(**overrides)

    @property
    def admin_key(self) -> str:
        return self.env["SUBMITTER_ADMIN_KEY"]


# Dummy credentials for the private S3 server, set for this process and every child:
# nothing in the test suite can reach a real AWS account.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "submitter-test",
    "AWS_SECRET_ACCESS_KEY": "submitter-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
os.environ.update(S3_CREDENTIALS)


def s3_storage(endpoint: str) -> dict[str, str]:
    """Settings for a fresh bucket on the S3 server at `endpoint`."""
    import boto3

    bucket = f"submitter-test-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return {
        "SUBMITTER_STORAGE_URL": f"s3://{bucket}/artifacts",
        "SUBMITTER_S3_ENDPOINT_URL": endpoint,
    }


@contextmanager
def make_backend(name: str, home: Path) -> Iterator[Backend]:
    env = {
        "SUBMITTER_HOME": str(home),
        "SUBMITTER_ADMIN_KEY": "sk_test_" + secrets.token_urlsafe(16),
        **FAST_TIMINGS,
    }
    with ExitStack() as stack:
        if name != "embedded":
            env["SUBMITTER_DATABASE_URL"] = stack.enter_context(postgres_database())
        if name == "postgres-redis":
            env["SUBMITTER_BROKER_URL"] = stack.enter_context(redis_database())
            env.update(s3_storage(stack.enter_context(s3_server())))
        elif name == "postgres-rabbitmq":
            env["SUBMITTER_BROKER_URL"] = stack.enter_context(rabbitmq_vhost())
        backend = Backend(name, env, home)
        upgrade(backend.settings)
        yield backend


class Process:
    """A `submitter <command>` child process with its output in a file."""

    def __init__(self, backend: Backend, *args: str, name: str | None = None) -> None:
        self.name = name or args[0]
        self.log_path = backend.home / f"{self.name}-{secrets.token_hex(3)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
        env.update(backend.env)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "submitter", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill_group(self) -> None:
        """SIGKILL the process and its pool children: a machine that died."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the main process (a worker's warm shutdown: it stops its own pool),
        then SIGKILL to whatever is left of its group. A SIGTERM to the whole group at once
        left Celery's main process waiting on its children until the timeout."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def eventually(what: Callable[[], Any], timeout: float = 30, every: float = 0.2) -> Any:
    """Poll `what` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s; last value {value!r}"
        time.sleep(every)


@dataclass
class Stack:
    """A backend with worker and beat processes and an API client per role."""

    backend: Backend
    api: TestClient
    runtime: Runtime
    keys: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def start(self, *args: str) -> Process:
        process = Process(self.backend, *args)
        self.processes.append(process)
        return process

    def submit(self, kind: str = "echo", role: str = "admin", **body: Any) -> dict[str, Any]:
        response = self.api.post(
            "/api/v1/jobs", json={"kind": kind, **body}, headers=self.headers(role)
        )
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/jobs/{job_id}", headers=self.headers("admin"))
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def logs(self, job_id: str) -> list[str]:
        response = self.api.get(f"/api/v1/jobs/{job_id}/logs", headers=self.headers("admin"))
        assert response.status_code == 200, response.text
        return [line["message"] for line in response.json()["items"]]

    def wait(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda j: j["state"] in TERMINAL,
        timeout: float = 60,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                logs = "\n\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes)
                raise AssertionError(f"timed out waiting on job {job_id}: {job}\n{logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()


@contextmanager
def make_stack(backend: Backend, *, worker: bool = True, beat: bool = True) -> Iterator[Stack]:
    settings = backend.settings
    runtime = Runtime(settings)
    keys = {"admin": backend.admin_key}
    with runtime.transaction() as session:
        for role in (Role.user, Role.viewer):
            _, keys[role.value] = create_key(session, f"{role.value}-{secrets.token_hex(3)}", role)
    app = create_app(settings)
    with TestClient(app) as api:
        stack = Stack(backend, api, runtime, keys)
        try:
            if worker:
                stack.start("worker", "--concurrency=2")
            if beat:
                stack.start("beat")
            yield stack
        finally:
            stack.stop()
            runtime.close()


def pytest_sessionfinish() -> None:
    stop_private_servers()


@pytest.fixture(scope="session", autouse=True)
def bubblewrap() -> str:
    """The sandbox of users' code, installed before any worker starts: a worker that found
    none would refuse users' command jobs (as it should)."""
    from tests.services import bubblewrap as install

    return install()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """Each backend once per session (tests that share it filter by their own job ids)."""
    try:
        with make_backend(request.param, tmp_path_factory.mktemp(request.param)) as made:
            yield made
    except RuntimeError as error:  # a server could neither be found nor started
        pytest.exit(f"test services unavailable: {error}", returncode=3)


@pytest.fixture(scope="session")
def stack(backend: Backend) -> Iterator[Stack]:
    with make_stack(backend) as made:
        yield made


@pytest.fixture(scope="session")
def command_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """The embedded stack (command jobs on by default there) and a served API's URL, shared
    by the tests of command jobs and of the sandbox. Its operator allows direct references
    in venvs, so that a hostile build backend can be tried (the default refuses them)."""
    import httpx

    from tests.services import _free_ports

    def answers(url: str) -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    home = tmp_path_factory.mktemp("command")
    with make_backend("embedded", home) as backend:
        backend.env["SUBMITTER_API_PORT"] = str(_free_ports()[0])
        backend.env["SUBMITTER_VENV_DIRECT_REFERENCES"] = "true"
        with make_stack(backend, beat=False) as stack:
            api = stack.start("api")
            url = f"http://127.0.0.1:{backend.env['SUBMITTER_API_PORT']}"
            eventually(lambda: answers(url), timeout=60)
            yield stack, url
            api.stop()


@pytest.fixture(params=BACKENDS)
def fresh_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend of its own for tests that kill processes or wipe queues."""
    with make_backend(request.param, tmp_path) as made:
        yield made
