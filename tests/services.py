"""Real PostgreSQL, Redis and RabbitMQ servers for the test suite.

Each context manager first looks at the address in its environment variable:

* ``SUBMITTER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
* ``SUBMITTER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``)
* ``SUBMITTER_TEST_RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``)

If something accepts a TCP connection there (1 s timeout) that server is used. Otherwise a
private throwaway server is started from the installed binaries on a free loopback port in a
temp dir, once per process, and stopped by ``stop_private_servers()`` or at interpreter exit.
A missing binary is installed with apt-get when running as root; otherwise ``RuntimeError``
names the binary and the Debian package. Which path was taken is printed to stderr.

Private servers listen on 127.0.0.1 only: PostgreSQL as superuser ``postgres`` with trust auth
(run as the ``postgres`` or ``nobody`` user when we are root, since postgres refuses root),
Redis without persistence, RabbitMQ as ``guest:guest`` with its own node name, epmd, Erlang
cookie and no plugins. Each also gets the kernel's parent-death signal, so a test run killed
with SIGKILL does not leave servers running (only its temp dir).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import amqp
import psycopg
import redis
from kombu import Connection
from kombu.utils.url import parse_url
from psycopg import sql
from sqlalchemy.engine import URL, make_url

POSTGRES_ENV = "SUBMITTER_TEST_POSTGRES_URL"
REDIS_ENV = "SUBMITTER_TEST_REDIS_URL"
RABBITMQ_ENV = "SUBMITTER_TEST_RABBITMQ_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"

PROBE_TIMEOUT = 1.0  # "does anything answer there?"
START_TIMEOUT = 90.0  # a private server must accept connections within this
STOP_TIMEOUT = 30.0
FALLBACK_QUEUES = ("default", "train", "hpc")  # purged when only the default vhost is usable
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _log(message: str) -> None:
    print(f"[tests.services] {message}", file=sys.stderr, flush=True)


def _answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_ports(count: int = 1) -> list[int]:
    """Distinct free loopback ports (all bound at once, so they cannot repeat)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: {output}")
    return done.stdout


# --------------------------------------------------------------------------- binaries


_apt_updated = False


def _apt_install(package: str) -> None:
    global _apt_updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log(f"installing Debian package {package!r} with apt-get (running as root)")
    if not _apt_updated:
        _run(["apt-get", "update"], timeout=300, env=env)
        _apt_updated = True
    _run(["apt-get", "install", "-y", "--no-install-recommends", package], timeout=900, env=env)


def _find(names: list[str], dirs: list[str]) -> str | None:
    """First directory of ``dirs`` (then PATH) holding every executable in ``names``."""
    path_dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"]
    for d in [*dirs, *path_dirs]:
        if d and all(os.access(os.path.join(d, n), os.X_OK) for n in names):
            return d
    return None


def _bindir(names: list[str], package: str, dirs: Callable[[], list[str]] = list) -> str:
    """Directory holding all ``names``; apt-installs ``package`` first if root and missing."""
    found = _find(names, dirs())
    if found is None and os.geteuid() == 0:
        _apt_install(package)
        found = _find(names, dirs())
    if found is None:
        raise RuntimeError(
            f"{' and '.join(names)} not found on PATH or in {dirs() or 'the usual places'}: "
            f"install the Debian package {package!r} (apt-get install -y {package}), "
            "or point the SUBMITTER_TEST_*_URL variable at a running server"
        )
    return found


def bubblewrap() -> str:
    """bwrap, the sandbox of users' code: apt-installed when missing (as root)."""
    return os.path.join(_bindir(["bwrap"], "bubblewrap"), "bwrap")


def _postgres_dirs() -> list[str]:
    def version(d: str) -> float:
        try:
            return float(d.split("/")[-2])
        except ValueError:
            return 0.0

    on_path = shutil.which("postgres")
    newest_first = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    return ([os.path.dirname(os.path.realpath(on_path))] if on_path else []) + newest_first


# --------------------------------------------------------------------------- private servers


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


@dataclass
class _PrivateServer:
    kind: str
    tmpdir: str
    url: str = ""
    port: int = 0
    procs: list[tuple[subprocess.Popen[bytes], signal.Signals]] = field(default_factory=list)
    ctl: list[str] = field(default_factory=list)  # rabbitmqctl command for this node
    ctl_env: dict[str, str] = field(default_factory=dict)

    def spawn(self, name: str, cmd: list[str], stop_with: signal.Signals, **kw: object) -> None:
        def die_with_parent() -> None:
            # If this process dies without atexit (SIGKILL, SIGTERM), the kernel sends the
            # server its stop signal. Caveat: it fires when the *thread* that spawned it ends.
            _libc.prctl(_PR_SET_PDEATHSIG, int(stop_with))

        log = open(os.path.join(self.tmpdir, f"{name}.log"), "ab")  # noqa: SIM115
        with log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can kill leftovers
                preexec_fn=die_with_parent,
                **kw,  # type: ignore[call-overload]
            )
        self.procs.append((proc, stop_with))

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for proc, _ in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{what} exited with {proc.returncode} while starting:\n{self.logs()}"
                    )
            if ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"{what} not ready after {START_TIMEOUT:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for path in glob.glob(os.path.join(self.tmpdir, "*.log")):
            with open(path, errors="replace") as f:
                out.append(f"--- {path}\n{f.read()[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        self.stop_processes()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        _log(f"private {self.kind} server on port {self.port} stopped")

    def stop_processes(self) -> None:
        """Stop the processes with their stop signal but keep the temp dir (data, logs)."""
        for proc, sig in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _log(f"{self.kind} pid {proc.pid} ignored {sig.name}; killing it")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the process group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()


_private: dict[str, _PrivateServer] = {}
_lock = threading.Lock()


def _private_server(kind: str, start: Callable[[_PrivateServer], None]) -> _PrivateServer:
    """The process-wide private server of ``kind``, started on first use."""
    with _lock:
        if kind not in _private:
            server = _PrivateServer(kind, tempfile.mkdtemp(prefix=f"submitter-{kind}-"))
            try:
                start(server)
            except BaseException:
                server.stop()
                raise
            _private[kind] = server
            _log(f"private {kind} server started on port {server.port} (in {server.tmpdir})")
        return _private[kind]


def stop_private_servers() -> None:
    """Stop every private server this process started (also runs at interpreter exit)."""
    with _lock:
        while _private:
            _private.popitem()[1].stop()


atexit.register(stop_private_servers)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_connects(url: URL) -> bool:
    try:
        with psycopg.connect(_pg_conninfo(url), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


_INITDB_ARGS = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]
# TCP on loopback only (no unix socket), durability off: it is thrown away anyway
_POSTGRES_ARGS = [
    *("-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="),
    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
]


def _start_postgres(server: _PrivateServer) -> None:
    command = _init_postgres(server)
    _spawn_postgres(server, command)


def _init_postgres(server: _PrivateServer) -> list[str]:
    """initdb a data dir in the server's temp dir, pick its port; the postgres command line."""
    bindir = _bindir(["initdb", "postgres"], "postgresql", _postgres_dirs)
    data = os.path.join(server.tmpdir, "data")
    as_user: list[str] = []
    if os.geteuid() == 0:
        # postgres refuses to run as root: run initdb and the server as an unprivileged user
        # (setpriv execs, so the Popen pid is the postmaster itself) owning the temp dir.
        user = next(u for u in ("postgres", "nobody") if _user_exists(u))
        pw = pwd.getpwnam(user)
        os.chown(server.tmpdir, pw.pw_uid, pw.pw_gid)
        as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
        as_user += ["--pdeathsig", "INT"]  # the uid change clears die_with_parent's setting
    _run(
        [*as_user, f"{bindir}/initdb", "-D", data, *_INITDB_ARGS],
        timeout=120,
    )
    server.port = _free_ports()[0]
    server.url = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    return [*as_user, f"{bindir}/postgres", "-D", data, "-p", str(server.port), *_POSTGRES_ARGS]


def _spawn_postgres(server: _PrivateServer, command: list[str]) -> None:
    server.spawn("postgres", command, signal.SIGINT, cwd=server.tmpdir)  # SIGINT: fast shutdown
    server.wait_until(lambda: _pg_connects(make_url(server.url)), "postgres")


class RestartablePostgres:
    """A private PostgreSQL for one test, which the test may stop and start again.

    Never the shared server of `postgres_database()`: stopping that would break every other
    test. Its own data dir and port, both kept across `stop()` / `start()`, so clients see
    the same server go away and come back, as with `pg_ctl restart`. `stop()` is a "fast"
    shutdown (SIGINT): the server terminates its sessions, each client socket gets the
    FATAL message and EOF, then the port is closed until `start()`.
    """

    def __init__(self) -> None:
        self._server = _PrivateServer("postgres", tempfile.mkdtemp(prefix="submitter-pg-restart-"))
        try:
            self._command = _init_postgres(self._server)
            self.start()
        except BaseException:
            self._server.stop()
            raise
        _log(f"restartable PostgreSQL started on port {self.port} (in {self._server.tmpdir})")

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def admin_url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (superuser, trust auth)."""
        return self._server.url

    @property
    def running(self) -> bool:
        return any(proc.poll() is None for proc, _ in self._server.procs)

    def start(self) -> None:
        """Start the server on its data dir and port; return once it accepts connections."""
        if not self.running:
            self._server.procs.clear()
            _spawn_postgres(self._server, self._command)

    def stop(self) -> None:
        """Fast shutdown; returns once the postmaster exited (the port is closed)."""
        self._server.stop_processes()

    def create_database(self) -> str:
        """A new database; its ``postgresql+psycopg://`` URL."""
        name = f"submitter_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_url(self.admin_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        """Stop the server and remove its data dir."""
        self._server.stop()


@contextmanager
def restartable_postgres() -> Iterator[RestartablePostgres]:
    """A `RestartablePostgres`, removed on exit."""
    server = RestartablePostgres()
    try:
        yield server
    finally:
        server.close()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _postgres_admin_url() -> URL:
    url = make_url(os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    if _answers(host, port):
        _log(f"PostgreSQL: using existing server at {host}:{port}")
        return url
    _log(f"PostgreSQL: nothing answers at {host}:{port}; using a private server")
    return make_url(_private_server("postgres", _start_postgres).url)


@contextmanager
def postgres_database() -> Iterator[str]:
    """Yield a ``postgresql+psycopg://`` URL of a new, empty, uniquely named database.

    The database is dropped ``WITH (FORCE)`` on exit (open connections are terminated).
    """
    admin = _postgres_admin_url()
    name = f"submitter_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_conninfo(admin), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(_pg_conninfo(admin), autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --------------------------------------------------------------------------- Redis


def _redis_pings(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


_REDIS_ARGS = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"]


def _start_redis(server: _PrivateServer) -> None:
    bindir = _bindir(["redis-server"], "redis-server")
    server.port = _free_ports()[0]
    server.spawn(
        "redis",
        [f"{bindir}/redis-server", "--port", str(server.port), *_REDIS_ARGS, server.tmpdir],
        signal.SIGTERM,
        cwd=server.tmpdir,
    )
    server.url = f"redis://127.0.0.1:{server.port}"
    server.wait_until(lambda: _redis_pings(server.url), "redis-server")


def _flushdb(url: str) -> None:
    with redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) as client:
        client.flushdb()


@contextmanager
def redis_database() -> Iterator[str]:
    """Yield ``redis://host:port/N`` of a flushed logical database; flushed again on exit.

    N is the database number of the configured URL (13 by default), also on a private server.
    """
    url = os.environ.get(REDIS_ENV) or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if _answers(host, port):
        _log(f"Redis: using existing server at {host}:{port}")
    else:
        _log(f"Redis: nothing answers at {host}:{port}; using a private server")
        db = parts.path.strip("/") or "0"
        url = f"{_private_server('redis', _start_redis).url}/{db}"
    _flushdb(url)
    try:
        yield url
    finally:
        _flushdb(url)


# --------------------------------------------------------------------------- RabbitMQ


def _amqp_connects(url: str) -> bool:
    """One quick AMQP login (py-amqp directly: kombu's connect() sleeps 2 s between retries)."""
    p = parse_url(url)
    conn = amqp.Connection(
        host=f"{p['hostname']}:{p['port'] or 5672}",
        userid=p["userid"] or "guest",
        password=p["password"] or "guest",
        virtual_host=p["virtual_host"] or "/",
        connect_timeout=3,
    )
    try:
        conn.connect()
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            conn.collect()


def _start_rabbitmq(server: _PrivateServer) -> None:
    # /usr/lib/rabbitmq/bin holds Debian's real scripts; /usr/sbin has wrappers that `su rabbitmq`
    bindir = _bindir(
        ["rabbitmq-server", "rabbitmqctl"], "rabbitmq-server", lambda: ["/usr/lib/rabbitmq/bin"]
    )
    epmd_dir = _bindir(
        ["epmd"], "erlang-base", lambda: sorted(glob.glob("/usr/lib/erlang/erts-*/bin"))
    )
    port, dist_port, epmd_port = _free_ports(3)
    d = server.tmpdir
    files = {
        "rabbitmq-env.conf": "",  # instead of /etc/rabbitmq/rabbitmq-env.conf (NODENAME etc.)
        "rabbitmq.conf": f"listeners.tcp.1 = 127.0.0.1:{port}\n",
        "advanced.config": "[].\n",
        "enabled_plugins": "[].\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    env = {
        **os.environ,
        "HOME": d,  # Erlang cookie of its own, shared with our rabbitmqctl calls below
        "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
        "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
        "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
        "RABBITMQ_NODENAME": f"submitter-test-{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
        "RABBITMQ_LOG_BASE": f"{d}/log",
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    # A private epmd in the foreground: the node neither needs the system one nor leaves a
    # daemonized one behind. It must listen before the node starts, or erl starts its own.
    server.spawn(
        "epmd",
        [f"{epmd_dir}/epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
        signal.SIGTERM,
        env=env,
    )
    server.wait_until(lambda: _answers("127.0.0.1", epmd_port, 0.2), "epmd")
    # The script stays as a /bin/sh parent that turns SIGTERM into a clean broker stop.
    server.spawn("rabbitmq", [f"{bindir}/rabbitmq-server"], signal.SIGTERM, env=env, cwd=d)
    server.port = port
    server.url = f"amqp://guest:guest@127.0.0.1:{port}//"
    server.ctl = [f"{bindir}/rabbitmqctl", "-n", env["RABBITMQ_NODENAME"]]
    server.ctl_env = env
    server.wait_until(lambda: _amqp_connects(server.url), "rabbitmq-server")


def _vhost_with_rabbitmqctl(
    ctl: list[str], env: dict[str, str] | None, vhost: str, user: str
) -> Callable[[], None]:
    _run([*ctl, "add_vhost", vhost], timeout=60, env=env)

    def remove() -> None:
        _run([*ctl, "delete_vhost", vhost], timeout=60, env=env)

    try:
        _run([*ctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], timeout=60, env=env)
    except RuntimeError:
        remove()
        raise
    return remove


def _vhost_with_http_api(host: str, vhost: str, user: str, password: str) -> Callable[[], None]:
    auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()

    def call(method: str, path: str, body: dict[str, str] | None = None) -> None:
        request = urllib.request.Request(
            f"http://{host}:15672/api/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=3).close()

    v, u = quote(vhost, safe=""), quote(user, safe="")
    call("PUT", f"vhosts/{v}")
    call("PUT", f"permissions/{v}/{u}", {"configure": ".*", "write": ".*", "read": ".*"})
    return lambda: call("DELETE", f"vhosts/{v}")


def _purge_fallback_queues(url: str) -> None:
    with Connection(url, connect_timeout=5) as conn:
        for queue in FALLBACK_QUEUES:
            channel = conn.channel()
            try:
                channel.queue_purge(queue)
            except conn.channel_errors:
                pass  # no such queue: nothing to purge (the error closed the channel)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


def _fresh_vhost(
    base: str, ctl: list[str], ctl_env: dict[str, str] | None
) -> tuple[str, Callable[[], None]]:
    """(URL of a new vhost, its remover); else (``base``, a purge of FALLBACK_QUEUES)."""
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    vhost = f"submitter-test-{uuid.uuid4().hex[:12]}"
    url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    ways: list[tuple[str, Callable[[], Callable[[], None]]]] = []
    if ctl:
        ways.append(("rabbitmqctl", lambda: _vhost_with_rabbitmqctl(ctl, ctl_env, vhost, user)))
    if _answers(host, 15672):
        ways.append(("management API", lambda: _vhost_with_http_api(host, vhost, user, password)))
    for how, create in ways:
        try:
            remove = create()
        except (RuntimeError, OSError) as exc:  # urllib.error.URLError is an OSError
            reason = (str(exc).strip().splitlines() or [""])[-1][:200]
            _log(f"RabbitMQ: could not create vhost {vhost} with {how}: {reason}")
            continue
        if _amqp_connects(url):
            _log(f"RabbitMQ: created vhost {vhost} with {how}")
            return url, remove
        # rabbitmqctl reached some other local node than the one at `base`
        _log(f"RabbitMQ: vhost {vhost} made with {how} is not reachable at {host}; removing it")
        with contextlib.suppress(RuntimeError, OSError):
            remove()
    # No vhost could be made: share the URL's own vhost ("/" by default), purging the queues
    # the application uses before and after instead of deleting a vhost.
    shared = unquote(parts.path[1:]) or "/"
    _log(f"RabbitMQ: no vhost could be created; using vhost {shared!r}, purging queues")
    _purge_fallback_queues(base)
    return base, lambda: _purge_fallback_queues(base)


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """Yield ``amqp://user:pass@host:port/<vhost>`` of a new empty vhost, deleted on exit.

    The vhost is made with ``rabbitmqctl`` (local server, run as root or rabbitmq, or a private
    server) or the management HTTP API on port 15672. If neither works, the URL's own vhost is
    yielded instead, with the queues ``default``, ``train`` and ``hpc`` purged on entry and exit.
    """
    base = os.environ.get(RABBITMQ_ENV) or DEFAULT_RABBITMQ_URL
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    ctl: list[str] = []
    ctl_env: dict[str, str] | None = None
    if _answers(host, port):
        _log(f"RabbitMQ: using existing server at {host}:{port}")
        ctl_dir = _find(["rabbitmqctl"], []) if host in LOOPBACK else None
        ctl = [f"{ctl_dir}/rabbitmqctl"] if ctl_dir else []
    else:
        _log(f"RabbitMQ: nothing answers at {host}:{port}; using a private server")
        server = _private_server("rabbitmq", _start_rabbitmq)
        base, ctl, ctl_env = server.url, server.ctl, server.ctl_env
    url, cleanup = _fresh_vhost(base, ctl, ctl_env)
    try:
        yield url
    finally:
        cleanup()


# --------------------------------------------------------------------------- S3 (moto)


def _http_answers(url: str) -> bool:
    import urllib.error

    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # an error status is an answer too
    except OSError:
        return False


@contextmanager
def s3_server() -> Iterator[str]:
    """Yield the endpoint URL (``http://127.0.0.1:PORT``) of a private S3 API server.

    moto's server mode runs as its own process (``python -m moto.server``, from this
    interpreter's environment) on a free loopback port, with in-memory state; it is stopped
    and its state gone on exit. It accepts any credentials: callers set dummy ``AWS_*``
    variables and create their buckets.
    """
    server = _PrivateServer("s3", tempfile.mkdtemp(prefix="submitter-s3-"))
    try:
        server.port = _free_ports()[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        server.spawn(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(server.port)],
            signal.SIGTERM,
            cwd=server.tmpdir,
            env=env,
        )
        server.url = f"http://127.0.0.1:{server.port}"
        server.wait_until(lambda: _http_answers(f"{server.url}/moto-api/"), "moto S3 server")
        _log(f"private S3 (moto) server started at {server.url}")
        yield server.url
    finally:
        server.stop()
