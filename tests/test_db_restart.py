"""Fault test: PostgreSQL restarted under load, on PostgreSQL + Redis with a local folder store.

A private PostgreSQL (its own data dir and port, `tests.services.RestartablePostgres`), a
real `submitter api` under Uvicorn (a real HTTP server, so that reset connections can be
seen), a worker and beat. A few client threads, each with one keep-alive connection, send
a bounded mix of requests (list jobs, list datasets, submit an echo job, /ready) while the
database is stopped for a few seconds and started again. Counted, not timed:

- no 500 and no transport error (reset, refused, closed without an answer, timeout);
- 503s while the database is away, each with `Retry-After` and a `detail` naming it;
- every accepted (202) job succeeds exactly once after the database is back;
- worker and beat are still running;
- after a restart while the API is idle, the first requests succeed: pooled connections the
  restart broke are noticed at checkout, not handed to a request.

Run alone: ``.venv/bin/python -m pytest tests/test_db_restart.py -q -s`` (prints the counts).
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from submitter.db.migrate import upgrade
from submitter.runtime import Runtime
from submitter.security import Role, create_key
from tests.conftest import FAST_TIMINGS, TERMINAL, Backend, Process, eventually
from tests.services import RestartablePostgres, _free_ports, redis_database, restartable_postgres

CLIENTS = 3
PAUSE = 0.05  # between one client's requests: about 15 requests/s per client
BEFORE, AWAY, AFTER = 2.0, 6.0, 5.0  # seconds of load with the database up, down, up again


@pytest.fixture
def postgres() -> Iterator[RestartablePostgres]:
    try:
        with restartable_postgres() as server:
            yield server
    except RuntimeError as error:  # no PostgreSQL binaries and no way to install them
        pytest.exit(f"test services unavailable: {error}", returncode=3)


class Traffic:
    """Client threads sending a mix of requests until stopped; what came back, counted."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.bad_503: list[str] = []  # 503s without Retry-After or not naming the database
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def start(self) -> None:
        self.running.set()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a client hangs"

    def _client(self, number: int) -> None:
        # One connection per client, kept alive: a server that closes it after an error
        # (or resets it) shows up as a transport error on the next request.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(
            base_url=self.url, headers=self.headers, timeout=20, limits=limits
        ) as client:
            step = number
            while self.running.is_set():
                self._one(client, step % 4, step)
                step += 1
                time.sleep(PAUSE)

    def _one(self, client: httpx.Client, which: int, step: int) -> None:
        try:
            if which == 0:
                response = client.get("/api/v1/jobs", params={"limit": 5})
            elif which == 1:
                response = client.get("/api/v1/datasets")
            elif which == 2:
                response = client.post(
                    "/api/v1/jobs", json={"kind": "echo", "spec": {"message": f"m{step}"}}
                )
            else:
                response = client.get("/ready")
        except httpx.TransportError as error:
            with self.lock:
                self.errors[type(error).__name__] += 1
            return
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 202:
                self.accepted.append(response.json()["id"])
            if response.status_code == 503:
                detail = str(response.json().get("detail", ""))
                if "Retry-After" not in response.headers or "database" not in detail:
                    self.bad_503.append(f"{response.headers} {response.text[:300]}")


def _stack(postgres: RestartablePostgres, redis_url: str, home: Path) -> tuple[Backend, str]:
    port = _free_ports()[0]
    env = {
        "SUBMITTER_HOME": str(home),
        "SUBMITTER_ADMIN_KEY": "sk_test_" + secrets.token_urlsafe(16),
        "SUBMITTER_DATABASE_URL": postgres.create_database(),
        "SUBMITTER_BROKER_URL": redis_url,
        "SUBMITTER_STORAGE_URL": f"file://{home}/artifacts",
        "SUBMITTER_API_HOST": "127.0.0.1",
        "SUBMITTER_API_PORT": str(port),
        **FAST_TIMINGS,
    }
    backend = Backend("postgres-restart", env, home)
    upgrade(backend.settings)
    return backend, f"http://127.0.0.1:{port}"


def _user_key(backend: Backend) -> str:
    """A key stored in the database, so that authentication itself reads it (the bootstrap
    admin key is checked without the database)."""
    runtime = Runtime(backend.settings)
    try:
        with runtime.transaction() as session:
            _, key = create_key(session, f"load-{secrets.token_hex(3)}", Role.user)
        return key
    finally:
        runtime.close()


def _jobs(url: str, key: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        return {i: client.get(f"/api/v1/jobs/{i}").raise_for_status().json() for i in ids}


def test_postgres_restart_under_load(
    postgres: RestartablePostgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with redis_database() as redis_url:
        backend, url = _stack(postgres, redis_url, tmp_path)
        key = _user_key(backend)
        processes = [
            Process(backend, "api"),
            Process(backend, "worker", "--concurrency=2"),
            Process(backend, "beat"),
        ]
        try:
            eventually(lambda: _ready(url), timeout=60)
            traffic = Traffic(url, key)
            traffic.start()
            try:
                time.sleep(BEFORE)
                postgres.stop()
                time.sleep(AWAY)
                postgres.start()
                time.sleep(AFTER)
            finally:
                traffic.stop()
            first_after_idle_restart = _idle_restart(postgres, url, key)
            jobs = eventually(lambda: _all_ended(url, key, traffic.accepted), timeout=90)
            logs = {i: _finished_lines(url, key, i) for i in traffic.accepted}
            alive = {p.name: p.popen.poll() is None for p in processes}
        finally:
            for process in processes:
                process.stop()
        with capsys.disabled():
            print(
                f"\nstatuses {dict(sorted(traffic.statuses.items()))}, transport errors "
                f"{dict(traffic.errors)}, accepted {len(traffic.accepted)}, first requests "
                f"after an idle restart {first_after_idle_restart}"
            )
        tails = "\n".join(
            f"--- {p.name}\n" + "\n".join(line[:300] for line in p.tail(30).splitlines())
            for p in processes
        )
        assert traffic.statuses[500] == 0, tails
        assert not traffic.errors, tails
        assert traffic.statuses[503] > 0  # the outage was seen
        assert not traffic.bad_503, traffic.bad_503[:3]
        assert traffic.accepted, "no job was accepted"
        states = collections.Counter(job["state"] for job in jobs.values())
        assert states == {"succeeded": len(jobs)}, states
        assert all(lines == 1 for lines in logs.values()), logs
        assert alive == {"api": True, "worker": True, "beat": True}, tails
        assert first_after_idle_restart == [200] * len(first_after_idle_restart), tails


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _idle_restart(postgres: RestartablePostgres, url: str, key: str) -> list[int]:
    """Restart the database while the API's pool holds idle connections; the statuses of
    the next requests, one after another on one keep-alive connection."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=20) as client:
        for _ in range(3):
            client.get("/api/v1/jobs", params={"limit": 1})
        postgres.stop()
        postgres.start()
        statuses = []
        for path in ("/api/v1/jobs", "/api/v1/datasets", "/api/v1/jobs", "/api/v1/datasets"):
            try:
                statuses.append(client.get(path).status_code)
            except httpx.TransportError:
                statuses.append(0)
        return statuses


def _all_ended(url: str, key: str, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    try:
        jobs = _jobs(url, key, ids)
    except httpx.HTTPError:
        return None
    return jobs if all(job["state"] in TERMINAL for job in jobs.values()) else None


def _finished_lines(url: str, key: str, job_id: str) -> int:
    """How many times the job's log says it finished (two would be two recorded runs)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        lines = client.get(f"/api/v1/jobs/{job_id}/logs").raise_for_status().json()["items"]
    return sum(line["message"].startswith("finished:") for line in lines)
