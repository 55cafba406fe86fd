"""Tests of tests/services.py against real servers: existing ones and private throwaway ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import redis
from kombu import Connection
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import services


def _pg(url: str) -> psycopg.Connection:
    return psycopg.connect(services._pg_conninfo(make_url(url)), connect_timeout=5)


def _vhost(url: str) -> str:
    return unquote(urlsplit(url).path[1:]) or "/"


def _round_trip(url: str, queue: str = "train") -> None:
    with Connection(url, connect_timeout=5) as conn:
        q = conn.SimpleQueue(queue)
        q.put({"job": 1})
        message = q.get(timeout=5)
        assert message.payload == {"job": 1}
        message.ack()
        q.close()


def _queue_depth(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=5) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        return int(count)


@pytest.fixture
def own_private_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point all three env vars at a port where nothing listens; a private registry of servers.

    Yields the dead URLs. Servers this test starts are stopped at teardown; the session's own
    private servers (if conftest started any) are untouched.
    """
    dead = services._free_ports()[0]
    urls = {
        services.POSTGRES_ENV: f"postgresql://postgres@127.0.0.1:{dead}/postgres",
        services.REDIS_ENV: f"redis://127.0.0.1:{dead}/5",
        services.RABBITMQ_ENV: f"amqp://guest:guest@127.0.0.1:{dead}//",
    }
    for name, url in urls.items():
        monkeypatch.setenv(name, url)
    monkeypatch.setattr(services, "_private", {})
    yield urls
    services.stop_private_servers()


def _stop_and_check_gone(kind: str) -> None:
    server = services._private[kind]
    procs = [proc for proc, _ in server.procs]
    assert procs and all(proc.poll() is None for proc in procs)
    services.stop_private_servers()
    assert kind not in services._private
    assert all(proc.poll() is not None for proc in procs)
    assert not services._answers("127.0.0.1", server.port)
    assert not os.path.exists(server.tmpdir)


# --------------------------------------------------------------------------- default addresses


def test_postgres_database_is_new_empty_and_dropped() -> None:
    with services.postgres_database() as url, services.postgres_database() as other:
        assert url.startswith("postgresql+psycopg://")
        name = make_url(url).database
        assert name and name != make_url(other).database
        engine = create_engine(url)
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT current_database()")) == name
            tables = conn.scalar(
                text(
                    "SELECT count(*) FROM information_schema.tables"
                    " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
            assert tables == 0
            conn.execute(text("CREATE TABLE t (x int)"))
        # a connection left open must not stop the drop (WITH (FORCE))
        held = engine.connect()
        held.execute(text("SELECT 1"))
    admin = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    with _pg(admin) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert gone.fetchone() == (0,)
    engine.dispose()


def test_redis_database_is_flushed_on_entry_and_exit() -> None:
    with services.redis_database() as url:
        assert url.startswith("redis://")
        assert urlsplit(url).path.strip("/").isdigit()
        with redis.Redis.from_url(url) as client:
            assert client.dbsize() == 0
            client.set("left-behind", "1")
    with redis.Redis.from_url(url) as client:
        assert client.dbsize() == 0


def test_rabbitmq_vhost_is_fresh_and_removed() -> None:
    with services.rabbitmq_vhost() as url:
        assert url.startswith("amqp://")
        _round_trip(url)
        vhost = _vhost(url)
        if vhost != "/":
            with pytest.raises(Exception, match="NOT_FOUND"):
                _queue_depth(url, "hpc")  # a fresh vhost has no queues
    if vhost != "/":
        assert not services._amqp_connects(url)  # vhost deleted
    else:  # fallback: the shared vhost with the app's queues purged
        assert _queue_depth(url, "train") == 0


# --------------------------------------------------------------------------- private servers


def test_private_postgres_when_nothing_answers(
    own_private_servers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dead_port = make_url(own_private_servers[services.POSTGRES_ENV]).port
    with services.postgres_database() as url, services.postgres_database() as second:
        port = make_url(url).port
        assert port != dead_port
        assert make_url(second).port == port  # one private server per session
        with _pg(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        postmaster = services._private["postgres"].procs[0][0].pid
        if os.geteuid() == 0:  # postgres refuses root: it must run as someone else
            assert os.stat(f"/proc/{postmaster}").st_uid != 0
    assert f"private postgres server started on port {port}" in capsys.readouterr().err
    _stop_and_check_gone("postgres")


def test_private_redis_when_nothing_answers(
    own_private_servers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with services.redis_database() as url:
        parts = urlsplit(url)
        assert parts.port != urlsplit(own_private_servers[services.REDIS_ENV]).port
        assert parts.path == "/5"  # the configured logical database is kept
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            client.set("k", "v")
    assert f"private redis server started on port {parts.port}" in capsys.readouterr().err
    _stop_and_check_gone("redis")


def test_private_rabbitmq_when_nothing_answers(
    own_private_servers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with services.rabbitmq_vhost() as url:
        port = urlsplit(url).port
        assert port != urlsplit(own_private_servers[services.RABBITMQ_ENV]).port
        assert _vhost(url) != "/"  # rabbitmqctl reaches the private node
        _round_trip(url)
    assert not services._amqp_connects(url)
    assert f"private rabbitmq server started on port {port}" in capsys.readouterr().err

    # The fallback when no vhost can be made (no rabbitmqctl, no management API): the URL's
    # own vhost, with the app's queues purged on entry and on exit. Tried here, on the private
    # node, so that the shared broker's queues are left alone.
    base = services._private["rabbitmq"].url
    with Connection(base, connect_timeout=5) as conn:
        conn.SimpleQueue("train").put({"stale": True})
    assert _queue_depth(base, "train") == 1
    fallback, cleanup = services._fresh_vhost(base, [], None)
    assert fallback == base
    assert _queue_depth(base, "train") == 0
    with Connection(base, connect_timeout=5) as conn:
        conn.SimpleQueue("hpc").put({"stale": True})
    cleanup()
    assert _queue_depth(base, "hpc") == 0
    _stop_and_check_gone("rabbitmq")


def test_missing_binary_without_root_names_binary_and_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"no-such-server-xyz.*'no-such-package'"):
        services._bindir(["no-such-server-xyz"], "no-such-package")


def test_missing_binary_as_root_is_installed_with_apt_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(services, "_apt_updated", False)

    def fake_run(cmd: list[str], **_: object) -> str:
        commands.append(cmd)
        return ""

    monkeypatch.setattr(services, "_run", fake_run)
    installed = iter([None, "/opt/x/bin", None, "/opt/y/bin"])  # missing, then found
    monkeypatch.setattr(services, "_find", lambda names, dirs: next(installed))
    assert services._bindir(["x-server"], "x-package") == "/opt/x/bin"
    assert services._bindir(["y-server"], "y-package") == "/opt/y/bin"
    assert commands == [
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "x-package"],
        ["apt-get", "install", "-y", "--no-install-recommends", "y-package"],
    ]
