"""The database, broker or store away: 503 + Retry-After naming the part, never a 500 or a hang.

Real servers only: an unreachable database is a closed loopback port (refused) or a socket
that accepts connections and never answers; a restart is a private PostgreSQL stopped and
started again (tests.services.RestartablePostgres). The whole-stack version under load,
with a real Uvicorn, is tests/test_db_restart.py.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from submitter.api.app import create_app
from submitter.api.unavailable import database_unavailable
from submitter.config import Settings, load_settings
from submitter.db.migrate import upgrade
from submitter.db.session import make_engine
from submitter.runtime import Runtime
from submitter.security import Role, create_key
from submitter.worker.app import create_celery_app
from submitter.worker.broker import check_broker
from tests.services import (
    RestartablePostgres,
    _free_ports,
    postgres_database,
    restartable_postgres,
)

ANSWER_WITHIN = 60.0  # a hang guard, far above every bounded timeout involved


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never
    answers: a server that is stopped (SIGSTOP), overloaded, or behind a black hole."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield listener.getsockname()[1]


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(
        home=str(tmp_path), admin_key="sk_test_admin_" + "x" * 20, log_format="json", **overrides
    )


def _sample_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_answers_503_naming_the_database_when_it_is_unreachable(
    tmp_path: Path,
) -> None:
    closed = _free_ports()[0]
    settings = _settings(
        tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{closed}/submitter"
    )
    app = create_app(settings)
    operations = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    seen: dict[str, tuple[int, str, str | None]] = {}
    with TestClient(app, raise_server_exceptions=False) as api:
        for method, path in operations:
            # A stored key: authentication itself reads the database.
            headers = {"Authorization": "Bearer sk_not_the_admin_key"}
            response = api.request(method, _sample_path(path), headers=headers)
            seen[f"{method} {path}"] = (
                response.status_code,
                response.text[:200],
                response.headers.get("Retry-After"),
            )
        # And past authentication (the bootstrap key is checked without the database).
        admin = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}  # type: ignore[union-attr]
        jobs = api.get("/api/v1/jobs", headers=admin)
        submit = api.post(
            "/api/v1/jobs", json={"kind": "echo", "spec": {"message": "hi"}}, headers=admin
        )
    assert not [k for k, v in seen.items() if v[0] >= 500 and v[0] != 503], seen
    on_api = {k: v for k, v in seen.items() if " /api/v1/" in k}
    assert on_api and all(v[0] == 503 for v in on_api.values()), on_api
    assert all(v[2] == "5" and "database unavailable" in v[1] for v in on_api.values()), on_api
    assert seen["GET /ready"][0] == 503 and seen["GET /ready"][2] == "5"
    assert seen["GET /health"][0] == 200
    for response in (jobs, submit):
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert detail.startswith("database unavailable (PostgreSQL database submitter at ")
        assert f":{closed}" in detail and response.headers["Retry-After"] == "5"


def _answer(call: Any) -> Any:
    """`call()` in a thread; its result, or a failure if it does not return in time."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(ANSWER_WITHIN)
    assert box, f"no answer within {ANSWER_WITHIN:.0f} s: hangs"
    return box[0]


def test_ready_and_routes_answer_when_servers_accept_but_never_reply(
    tmp_path: Path, silent_port: int
) -> None:
    settings = _settings(
        tmp_path,
        database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/submitter",
        broker_url=f"redis://127.0.0.1:{silent_port}/0",
    )
    admin = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}  # type: ignore[union-attr]
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        ready = _answer(lambda: api.get("/ready"))
        jobs = _answer(lambda: api.get("/api/v1/jobs", headers=admin))
    assert ready.status_code == 503, ready.text
    assert ready.json()["detail"] == "not ready: database, broker failing"
    assert ready.json()["storage"] == "ok"
    assert ready.headers["Retry-After"] == "5"
    assert jobs.status_code == 503, jobs.text
    assert "database unavailable" in jobs.json()["detail"]


@pytest.fixture
def postgres() -> Iterator[RestartablePostgres]:
    with restartable_postgres() as server:
        yield server


def test_first_requests_after_a_restart_succeed(
    postgres: RestartablePostgres, tmp_path: Path
) -> None:
    """Pooled connections the restart closed are replaced at checkout, not used."""
    settings = _settings(tmp_path, database_url=postgres.create_database())
    upgrade(settings)
    runtime = Runtime(settings)
    with runtime.transaction() as session:
        _, key = create_key(session, "restart", Role.viewer)
    runtime.close()
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:

        def fill_pool() -> None:  # connections checked out at once, then returned idle
            threads = [
                threading.Thread(target=lambda: api.get("/api/v1/jobs", headers=headers))
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        fill_pool()
        postgres.stop()
        down = api.get("/api/v1/jobs", headers=headers)
        postgres.start()
        # A failed request makes SQLAlchemy discard the whole pool; so, again, with no
        # request while the server is away: the pool still holds the broken connections.
        fill_pool()
        postgres.stop()
        postgres.start()
        after = [api.get(path, headers=headers).status_code for path in ["/api/v1/jobs"] * 6]
    assert down.status_code == 503 and down.headers["Retry-After"] == "5", down.text
    assert after == [200] * 6


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_broker_check_is_bounded(tmp_path: Path, silent_port: int, scheme: str) -> None:
    """A broker that accepts the connection and never answers fails the check, in bounded
    time (/ready's own deadline would answer anyway, but leave a thread stuck forever)."""
    url = {"redis": f"redis://127.0.0.1:{silent_port}/0"}.get(
        scheme, f"amqp://guest:guest@127.0.0.1:{silent_port}//"
    )
    celery = create_celery_app(_settings(tmp_path, broker_url=url))

    def check() -> Exception | None:
        try:
            check_broker(celery)
        except Exception as error:
            return error
        return None

    assert _answer(check) is not None


def test_data_errors_are_not_called_unavailable() -> None:
    """Only "cannot reach / cannot serve now" is a 503; a bad value stays the request's."""
    with postgres_database() as url:
        engine = make_engine(url)
        try:
            errors: list[DBAPIError] = []
            with engine.connect() as connection:
                connection.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
                connection.execute(text("INSERT INTO t VALUES (1)"))
                connection.commit()
            for statement, params in (
                ("INSERT INTO t VALUES (1)", {}),  # IntegrityError
                ("SELECT CAST(:v AS text)", {"v": "nul\x00"}),  # DataError
                ("SELECT 1 / 0", {}),  # DataError (division by zero)
                ("SELECT nope FROM t", {}),  # ProgrammingError
                # OperationalError raised by psycopg itself, not a connection problem
                (
                    "SELECT 1 WHERE 1 IN (" + ",".join(f":p{i}" for i in range(70000)) + ")",
                    {f"p{i}": i for i in range(70000)},
                ),
            ):
                with engine.connect() as connection:
                    try:
                        connection.execute(text(statement), params)
                    except DBAPIError as error:
                        errors.append(error)
        finally:
            engine.dispose()
    assert len(errors) == 5 and isinstance(errors[0], IntegrityError)
    assert [database_unavailable(e) for e in errors] == [False] * 5, [
        f"{type(e).__name__}: {e.orig}" for e in errors
    ]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_an_unusable_store_is_503_naming_it(tmp_path: Path, store: str) -> None:
    if store == "local":  # a file where the store's folder should be
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("in the way")
        overrides = {"storage_url": f"file://{blocker}/artifacts"}
        named = f"artifact store unavailable (local folder {blocker}/artifacts)"
    else:  # an S3 endpoint nothing listens on (dummy credentials: tests/conftest.py)
        endpoint = f"http://127.0.0.1:{_free_ports()[0]}"
        overrides = {"storage_url": "s3://gone/artifacts", "s3_endpoint_url": endpoint}
        named = f"artifact store unavailable (S3 s3://gone/artifacts at {endpoint}"
    settings = _settings(tmp_path, **overrides)
    admin = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}  # type: ignore[union-attr]
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        upload = api.post(
            "/api/v1/datasets",
            data={"name": "small"},
            files={"file": ("small.csv", b"a,b\n1,2\n")},
            headers=admin,
        )
        ready = api.get("/ready")
    assert upload.status_code == 503, upload.text
    assert upload.json()["detail"].startswith(named), upload.json()
    assert upload.headers["Retry-After"] == "5"
    assert ready.status_code == 503 and ready.json()["detail"] == "not ready: storage failing"


def test_other_errors_keep_their_handling(tmp_path: Path) -> None:
    """What is not an outage is left alone: an I/O error with the store fine stays a 500,
    and a database error that is not "unavailable" goes to the app's handler of a base
    class of it (here one for StatementError), as it would without this module."""
    app = create_app(_settings(tmp_path))

    def io_error() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/nowhere")

    def programming_error() -> None:
        with app.state.runtime.engine.connect() as connection:
            connection.execute(text("SELECT nope FROM nowhere"))

    async def statement_error(_: Any, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"handled {type(error).__name__}"}, status_code=418)

    app.add_api_route("/test/io-error", io_error)
    app.add_api_route("/test/programming-error", programming_error)
    app.add_exception_handler(StatementError, statement_error)
    with TestClient(app, raise_server_exceptions=False) as api:
        io = api.get("/test/io-error")
        programming = api.get("/test/programming-error")
    assert io.status_code == 500
    assert programming.status_code == 418, programming.text
    assert programming.json() == {"detail": "handled OperationalError"}
