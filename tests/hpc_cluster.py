"""A real single-node SLURM cluster and a private sshd on this machine, for the HPC tests.

``slurm_cluster()`` starts, once per process (the first call; later calls return the same
``TestCluster``), and stops at interpreter exit (``stop_slurm_cluster()``):

* munged as user ``munge`` (a running munged that answers ``munge -n | unmunge`` is reused);
* slurmdbd on MariaDB with a fresh database ``slurm_acct_<run>`` (``sacct`` works), unless
  ``SUBMITTER_TEST_SLURM_ACCOUNTING=0``. With ``=1`` accounting is required; unset, a slurmdbd
  that cannot be started is logged and the cluster runs with ``accounting=False``. The MariaDB
  at ``/run/mysqld/mysqld.sock`` (``SUBMITTER_TEST_MARIADB_SOCKET``) is used as root through
  its socket; if it does not answer, a private throwaway mariadbd is started;
* slurmctld and slurmd (``slurm.conf`` written to ``/etc/slurm/slurm.conf`` so that the
  commands find it without ``SLURM_CONF``; state, spool and logs in a private temp dir), one
  node ``hostname -s`` with all CPUs and ~90 % of the memory, one partition ``debug``;
* an sshd on 127.0.0.1:<free port> with its own host key, letting in only the unprivileged user
  ``submitter-hpc`` (created if missing) with two throwaway keys, one with a passphrase;
* a stand-in for Lmod's ``module`` command (a shell function, see ``setup``) with one module.

All daemons run in the foreground with the kernel's parent-death signal (tests/services.py's
``_PrivateServer``), so a killed test run does not leave them running (the signal fires when
the *thread* that started them ends: call ``slurm_cluster()`` first from the main thread, as
the session fixture ``slurm_cluster`` in tests/hpc/conftest.py does). Because
``/etc/slurm/slurm.conf``, the node name and the user are machine-wide, only one test process
runs a cluster at a time: the others wait for ``/run/submitter-test-slurm/lock`` (up to
``SUBMITTER_TEST_SLURM_LOCK_TIMEOUT`` seconds, 240 by default). Whoever takes the lock first
clears what a killed earlier run left behind: processes marked with its run id, processes of
``submitter-hpc``, its MariaDB database and its temp dir.

Everything needs root (slurmd starts jobs as other users). Missing binaries are installed with
apt-get (``slurm-wlm``, ``munge``, ``openssh-server``, ``slurmdbd``, ``mariadb-server``).
Which path was taken is printed to stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.services import _answers, _apt_install, _find, _free_ports, _PrivateServer, _run

ACCOUNTING_ENV = "SUBMITTER_TEST_SLURM_ACCOUNTING"  # 0: off, 1: required, unset: if possible
MARIADB_SOCKET_ENV = "SUBMITTER_TEST_MARIADB_SOCKET"
LOCK_TIMEOUT_ENV = "SUBMITTER_TEST_SLURM_LOCK_TIMEOUT"
#: Declare this many CPUs on the node instead of the machine's (bench/hpc_array.py: jobs that
#: only `echo` use no CPU; with 2 real CPUs SLURM runs 2 at once and bounds any measure).
CPUS_ENV = "SUBMITTER_TEST_SLURM_CPUS"
RUN_ENV = "SUBMITTER_TEST_SLURM_RUN"  # in the environment of every daemon we start

USER = "submitter-hpc"
CLUSTER_NAME = "submittertest"
PARTITION = "debug"
MODULE = "testenv/1.0"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
STATE_DIR = Path("/run/submitter-test-slurm")  # lock, registry of the live run, conf backup
MARKER = "# written by tests/hpc_cluster.py"
DEFAULT_MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
SLURM_PACKAGES = {  # binary -> Debian package
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "munged": "munge",
    "munge": "munge",
    "unmunge": "munge",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


@dataclass
class TestCluster:
    """What the tests need to reach the cluster (see the module docstring)."""

    __test__ = False  # not a pytest test class

    hostname: str  # `hostname -s`: the node name and SlurmctldHost
    ssh_host: str
    ssh_port: int
    user: str
    key_file: Path
    passphrase_key_file: Path
    passphrase: str
    known_hosts: Path
    wrong_known_hosts: Path
    empty_known_hosts: Path
    workdir: str  # owned by `user`, fresh per test process
    setup: list[str]  # [". '<tmp>/modules/module-shim.sh'"]
    module_name: str
    partition: str
    cpus: int
    real_memory_mb: int
    jobcomp_log: Path
    accounting: bool
    local_workdir: str = ""  # for transport "local": owned by root, fresh per test process
    slurm_conf: Path = SLURM_CONF
    tmpdir: Path = field(default_factory=Path)  # the private dir holding all of the above

    def config(self, name: str = "test", transport: str = "ssh", **overrides: Any) -> dict:
        """A cluster entry for Submitter's YAML ``clusters:`` list (+ ``overrides``)."""
        entry: dict[str, Any] = {"name": name, "transport": transport}
        if transport == "ssh":
            entry |= {
                "host": self.ssh_host,
                "port": self.ssh_port,
                "user": self.user,
                "key_file": str(self.key_file),
                "known_hosts": str(self.known_hosts),
                "workdir": self.workdir,
            }
        else:
            entry["workdir"] = self.local_workdir
        entry |= {"setup": list(self.setup), "partition": self.partition}
        entry.update(overrides)
        return entry

    def ssh_argv(
        self,
        command: str,
        *,
        known_hosts: Path | None = None,
        key_file: Path | None = None,
        timeout: int = 10,
    ) -> list[str]:
        """``ssh`` argv running ``command`` (a shell string) as ``user``, host key checked."""
        return [
            "ssh",
            *("-F", "/dev/null", "-p", str(self.ssh_port), "-i", str(key_file or self.key_file)),
            *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
            *("-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"),
            *("-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}"),
            *("-o", f"ConnectTimeout={timeout}", "-o", "LogLevel=ERROR"),
            f"{self.user}@{self.ssh_host}",
            command,
        ]


# --------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[tests.hpc_cluster] {message}", file=sys.stderr, flush=True)


def _binaries(packages: dict[str, str]) -> dict[str, str]:
    """Absolute path of each binary (name -> Debian package); apt-installs missing ones."""
    missing = sorted({pkg for name, pkg in packages.items() if _find([name], []) is None})
    if missing and os.geteuid() == 0:
        for pkg in missing:
            _apt_install(pkg)
    paths, absent = {}, []
    for name, pkg in packages.items():
        found = _find([name], [])
        if found is None:
            absent.append((name, pkg))
        else:
            paths[name] = os.path.join(found, name)
    if absent:
        names = ", ".join(name for name, _ in absent)
        pkgs = " ".join(sorted({pkg for _, pkg in absent}))
        raise RuntimeError(
            f"{names} not found: install the Debian packages {pkgs} (apt-get install -y {pkgs})"
        )
    return paths


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _mkdir(path: Path, mode: int = 0o755, owner: pwd.struct_passwd | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _as_user(pw: pwd.struct_passwd, pdeathsig: str = "TERM") -> list[str]:
    # setpriv execs, so the Popen pid is the daemon itself; the uid change clears the parent
    # death signal that _PrivateServer.spawn sets, so setpriv sets it again.
    return [
        *("setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"),
        *("--pdeathsig", pdeathsig),
    ]


def _ok(cmd: list[str] | str, env: dict[str, str] | None = None, timeout: float = 10) -> bool:
    try:
        done = subprocess.run(
            cmd, shell=isinstance(cmd, str), capture_output=True, timeout=timeout, env=env
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def _processes() -> list[int]:
    """Live processes but this one (not zombies: nothing to kill there)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    return [p for p in pids if _read_proc(p, "stat").rpartition(b")")[2][:2] not in (b" Z", b"")]


def _read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _kill(pids: list[int], why: str) -> None:
    for pid in pids:
        cmdline = _read_proc(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")
        if cmdline.strip():  # else a zombie or exiting process: not worth a line
            _log(f"SLURM: killing {why} pid {pid}: {cmdline.strip()[:120]}")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _marked_processes(run_id: str, tmpdir: str) -> list[int]:
    """Processes started (directly or not) by the run ``run_id``: they carry its marker in
    their environment, or (sshd, which reuses that memory for its title) its temp dir in their
    command line."""
    marker, path = f"{RUN_ENV}={run_id}".encode(), f"{tmpdir}/".encode()
    return [
        p
        for p in _processes()
        if marker in _read_proc(p, "environ").split(b"\0") or path in _read_proc(p, "cmdline")
    ]


def _user_processes(uid: int) -> list[int]:
    def owner(pid: int) -> int | None:
        for line in _read_proc(pid, "status").splitlines():
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
        return None

    return [p for p in _processes() if owner(p) == uid]


def _hostname() -> str:
    name = _run(["hostname", "-s"], timeout=10).strip()
    try:
        socket.getaddrinfo(name, None)
    except socket.gaierror:
        _log(f"SLURM: hostname {name!r} does not resolve; adding it to /etc/hosts")
        with open("/etc/hosts", "a") as f:
            f.write(f"127.0.1.1 {name}  {MARKER}\n")
    return name


def _real_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("no MemTotal in /proc/meminfo")


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """One test process's cluster: its processes, temp dir and what to undo at exit."""

    server: _PrivateServer
    run_id: str
    lock: IO[str] | None = None
    registry: dict[str, Any] = field(default_factory=dict)
    cluster: TestCluster | None = None
    env: dict[str, str] = field(default_factory=dict)  # for the daemons and slurm commands
    db_admin: list[str] = field(default_factory=list)  # `mariadb` argv as admin (system db)
    wrote_conf: bool = False
    cluster_settings: dict[str, Any] = field(default_factory=dict)  # for slurm.conf

    @property
    def tmp(self) -> Path:
        return Path(self.server.tmpdir)

    def save_registry(self) -> None:
        path = STATE_DIR / "registry.json"
        _write(path.with_suffix(".tmp"), json.dumps(self.registry), 0o600).replace(path)

    def slurm(self, *cmd: str, timeout: float = 30) -> str:
        return _run(list(cmd), timeout=timeout, env=self.env)

    def stop(self) -> None:
        if self.lock is None:  # never got the machine: nothing of ours but the temp dir
            self.server.stop()
            return
        if self.server.port:  # slurmctld was started
            with contextlib.suppress(Exception):
                _cancel_all_jobs(self)
        self.server.stop()  # also removes the temp dir
        _kill(_marked_processes(self.run_id, str(self.tmp)), "leftover")
        with contextlib.suppress(KeyError):
            _kill(_user_processes(pwd.getpwnam(USER).pw_uid), f"leftover {USER}")
        if self.db_admin and self.registry.get("db"):
            _drop_database(self.db_admin, self.registry["db"], self.registry["db_user"])
        if self.wrote_conf:
            _restore_slurm_conf()
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / "registry.json").unlink()
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None


def _take_lock() -> IO[str]:
    _mkdir(STATE_DIR, 0o700)
    lock = open(STATE_DIR / "lock", "a+")  # noqa: SIM115 (held for the cluster's lifetime)
    timeout = float(os.environ.get(LOCK_TIMEOUT_ENV) or 240)
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise RuntimeError(
                    f"another test process still holds the SLURM test cluster after {timeout:.0f}"
                    f" s ({_registry_owner()}); only one can run at a time on a machine "
                    f"(wait for it, or raise {LOCK_TIMEOUT_ENV})"
                ) from None
            if not waiting:
                _log(f"SLURM: waiting for the test cluster of {_registry_owner()} to stop")
                waiting = True
            time.sleep(1)


def _registry_owner() -> str:
    try:
        data = json.loads((STATE_DIR / "registry.json").read_text())
        return f"pid {data.get('owner')}"
    except (OSError, ValueError):
        return "an unknown process"


def _clear_stale_run() -> None:
    """Remove what a killed earlier run left behind (called holding the lock)."""
    path = STATE_DIR / "registry.json"
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        old = None
    except (OSError, ValueError):
        _log(f"SLURM: ignoring an unreadable {path}")
        old = None
    if old:
        _log(f"SLURM: clearing what the run of dead pid {old.get('owner')} left behind")
        _kill(_marked_processes(old["run_id"], old["tmpdir"]), "stale")
        if old.get("db") and old.get("db_admin"):
            with contextlib.suppress(Exception):
                _drop_database(old["db_admin"], old["db"], old["db_user"])
        if str(old.get("tmpdir", "")).startswith(tempfile.gettempdir()):
            shutil.rmtree(old["tmpdir"], ignore_errors=True)
        path.unlink()
    with contextlib.suppress(KeyError):
        _kill(_user_processes(pwd.getpwnam(USER).pw_uid), f"stale {USER}")
    # daemons of ours not marked (should not happen) would hold no ports we use: only warn
    for pid in _processes():
        comm = _read_proc(pid, "comm").strip()
        if comm in (b"slurmctld", b"slurmd", b"slurmdbd"):
            _log(f"SLURM: note: a {comm.decode()} (pid {pid}) not started by this module runs")


# --------------------------------------------------------------------------- pieces


def _ensure_munge(run: _Run, munged: str) -> None:
    if _ok("munge -n | unmunge"):
        _log("SLURM: using the running munged")
        return
    pw = pwd.getpwnam("munge")
    for d, mode in (("/etc/munge", 0o700), ("/var/lib/munge", 0o700), ("/var/log/munge", 0o700)):
        _mkdir(Path(d), mode, pw)
    _mkdir(Path("/run/munge"), 0o755, pw)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _log(f"SLURM: creating the munge key {key}")
        if not _ok(["mungekey", "--create", f"--keyfile={key}"], timeout=60):
            key.write_bytes(os.urandom(1024))
    os.chown(key, pw.pw_uid, pw.pw_gid)
    os.chmod(key, 0o400)
    run.server.spawn(
        "munged", [*_as_user(pw), munged, "--foreground", "--force"], signal.SIGTERM, env=run.env
    )
    run.server.wait_until(lambda: _ok("munge -n | unmunge"), "munged")
    _log("SLURM: started munged")


def _ensure_user() -> pwd.struct_passwd:
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        _log(f"SLURM: creating the user {USER}")
        _run(["useradd", "-m", "-s", "/bin/bash", "-c", "Submitter HPC tests", USER], timeout=60)
        pw = pwd.getpwnam(USER)
    # Without PAM, sshd refuses a locked account ("!" password, useradd's default) even for
    # key logins: "*" means "no password" instead.
    with open("/etc/shadow") as f:
        locked = any(
            line.split(":")[0] == USER and line.split(":")[1].startswith("!") for line in f
        )
    if locked:
        _run(["usermod", "-p", "*", USER], timeout=60)
    return pw


def _keygen(path: Path, comment: str, passphrase: str = "") -> str:
    """Make an ed25519 key pair; return "type base64" of its public key."""
    _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)], 30
    )
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def _start_sshd(run: _Run, sshd: str, user: pwd.struct_passwd) -> dict[str, Any]:
    tmp = run.tmp
    etc, keys = tmp / "etc", _mkdir(tmp / "ssh", 0o700)
    port = _free_ports()[0]
    host_key = _keygen(etc / "ssh_host_ed25519_key", "submitter-test-host")
    other_key = _keygen(keys / "other_host_key", "submitter-test-wrong-host")
    passphrase = secrets.token_urlsafe(12)
    client = _keygen(keys / "id_ed25519", "submitter-test")
    client_pass = _keygen(keys / "id_ed25519_passphrase", "submitter-test-pass", passphrase)
    auth = _mkdir(tmp / "authorized_keys")
    _write(auth / USER, f"{client}\n{client_pass}\n")
    hosts = f"[127.0.0.1]:{port}"
    config = _write(
        etc / "sshd_config",
        f"""{MARKER}
Port {port}
ListenAddress 127.0.0.1
HostKey {etc}/ssh_host_ed25519_key
PidFile {tmp}/run/sshd.pid
AuthorizedKeysFile {auth}/%u
AllowUsers {USER}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 200
MaxSessions 100
PrintMotd no
X11Forwarding no
LogLevel VERBOSE
Subsystem sftp internal-sftp
""",
    )
    _mkdir(Path("/run/sshd"))  # privilege separation dir
    _run([sshd, "-t", "-f", str(config)], timeout=30)
    run.server.spawn("sshd", [sshd, "-D", "-e", "-f", str(config)], signal.SIGTERM, env=run.env)
    run.server.wait_until(lambda: _answers("127.0.0.1", port, 0.5), "sshd")
    _log(f"SLURM: started sshd on 127.0.0.1:{port}")
    return {
        "ssh_port": port,
        "key_file": keys / "id_ed25519",
        "passphrase_key_file": keys / "id_ed25519_passphrase",
        "passphrase": passphrase,
        "known_hosts": _write(keys / "known_hosts", f"{hosts} {host_key}\n"),
        "wrong_known_hosts": _write(keys / "wrong_known_hosts", f"{hosts} {other_key}\n"),
        "empty_known_hosts": _write(keys / "empty_known_hosts", ""),
    }


_MODULE_SHIM = r"""# A stand-in for Lmod's `module` command, for tests only (tests/hpc_cluster.py).
SUBMITTER_MODULEFILES=@MODULEFILES@
module() {
    local sub="${1:-}" name
    [ $# -gt 0 ] && shift
    case "$sub" in
    load | add)
        for name in "$@"; do
            case "$name" in
            "" | /* | *..*) ;;
            *) [ -f "$SUBMITTER_MODULEFILES/$name.sh" ] && {
                    . "$SUBMITTER_MODULEFILES/$name.sh" || return 1
                    LOADEDMODULES="${LOADEDMODULES:+$LOADEDMODULES:}$name"
                    export LOADEDMODULES
                    continue
                } ;;
            esac
            echo "module: error: the following module(s) are unknown: \"$name\"" >&2
            return 1
        done
        ;;
    list)
        if [ -n "${LOADEDMODULES:-}" ]; then
            echo "Currently Loaded Modules:"
            echo "  ${LOADEDMODULES//:/ }"
        else
            echo "No modules loaded"
        fi
        ;;
    avail)
        (cd "$SUBMITTER_MODULEFILES" && find . -name '*.sh' | sed 's|^\./||; s|\.sh$||' | sort)
        ;;
    purge)
        unset LOADEDMODULES
        ;;
    *)
        echo "module: error: unsupported subcommand \"$sub\"" >&2
        return 1
        ;;
    esac
}
"""


def _write_modules(tmp: Path) -> list[str]:
    root = _mkdir(tmp / "modules")
    files, bindir = _mkdir(root / "modulefiles" / "testenv"), _mkdir(root / "bin")
    shim = _write(
        root / "module-shim.sh",
        _MODULE_SHIM.replace("@MODULEFILES@", shlex.quote(str(root / "modulefiles"))),
    )
    _write(
        files / "1.0.sh",
        "export SUBMITTER_TEST_MODULE=testenv-1.0\n"
        f'export PATH={shlex.quote(str(bindir))}"${{PATH:+:$PATH}}"\n',
    )
    _write(bindir / "testenv-hello", '#!/bin/sh\necho "hello from testenv"\n', 0o755)
    return [f". {shlex.quote(str(shim))}"]


def _cancel_all_jobs(run: _Run) -> None:
    ids = run.slurm("squeue", "-h", "-o", "%i", "-t", "PD,R,CG,S,CF,RQ,RS,RH", timeout=15)
    if ids.split():
        run.slurm("scancel", *ids.split(), timeout=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and run.slurm(
            "squeue", "-h", "-o", "%i", "-t", "PD,R,CG,S", timeout=15
        ):
            time.sleep(0.5)


# --------------------------------------------------------------------------- accounting


def _mariadb_ok(argv: list[str]) -> bool:
    return _ok([*argv, "-e", "SELECT 1"])


def _sql(argv: list[str], statement: str) -> str:
    return _run([*argv, "-N", "-B", "-e", statement], timeout=60)


def _drop_database(admin: list[str], db: str, user: str) -> None:
    try:
        _sql(
            admin,
            f"DROP DATABASE IF EXISTS `{db}`; DROP USER IF EXISTS '{user}'@'localhost', "
            f"'{user}'@'127.0.0.1';",
        )
        _log(f"SLURM: dropped the accounting database {db}")
    except RuntimeError as exc:
        _log(f"SLURM: could not drop the accounting database {db}: {exc}")


def _mariadb(run: _Run) -> tuple[list[str], str, int, bool]:
    """(admin argv, host, port, private?) of a MariaDB for slurmdbd; may start a private one."""
    client = _binaries({"mariadb": "mariadb-client"})["mariadb"]
    sock = os.environ.get(MARIADB_SOCKET_ENV) or DEFAULT_MARIADB_SOCKET
    admin = [client, "--protocol=socket", f"--socket={sock}", "-uroot"]
    if _mariadb_ok(admin):
        port, skip_networking = _sql(admin, "SELECT @@port, @@skip_networking").split()
        if skip_networking == "0":
            _log(f"SLURM: accounting on the running MariaDB ({sock}, port {port})")
            return admin, "127.0.0.1", int(port), False
        _log(f"SLURM: the MariaDB at {sock} does not listen on TCP; starting a private one")
    else:
        _log(f"SLURM: no MariaDB answers at {sock}; starting a private one")
    bins = _binaries({"mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server"})
    pw = pwd.getpwnam("mysql")
    base = _mkdir(run.tmp / "mariadb", 0o750, pw)
    _run(
        [
            bins["mariadb-install-db"],
            *("--no-defaults", f"--datadir={base}/data", "--user=mysql"),
            *("--auth-root-authentication-method=normal", "--skip-test-db"),
        ],
        timeout=180,
    )
    port = _free_ports()[0]
    run.server.spawn(
        "mariadbd",
        [
            *_as_user(pw),
            bins["mariadbd"],
            *("--no-defaults", f"--datadir={base}/data", f"--socket={base}/mysqld.sock"),
            *(f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={base}/mysqld.pid"),
            *("--skip-log-bin", "--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve"),
        ],
        signal.SIGTERM,
        env=run.env,
    )
    admin = [client, "--protocol=socket", f"--socket={base}/mysqld.sock", "-uroot"]
    run.server.wait_until(lambda: _mariadb_ok(admin), "mariadbd")
    _log(f"SLURM: started a private mariadbd on 127.0.0.1:{port}")
    return admin, "127.0.0.1", port, True


def _start_slurmdbd(run: _Run, host: str, dbd_port: int) -> list[str]:
    """Start MariaDB (if needed) and slurmdbd; the slurm.conf lines that use it."""
    slurmdbd = _binaries({"slurmdbd": "slurmdbd"})["slurmdbd"]
    admin, db_host, db_port, private = _mariadb(run)
    db, db_user = f"slurm_acct_{run.run_id}", f"slurm_test_{run.run_id}"
    password = secrets.token_hex(16)
    if not private:
        run.db_admin = admin
        run.registry |= {"db": db, "db_user": db_user, "db_admin": admin}
        run.save_registry()
    users = f"'{db_user}'@'localhost', '{db_user}'@'127.0.0.1'"
    _sql(
        admin,
        f"CREATE DATABASE `{db}`; "
        f"CREATE USER '{db_user}'@'localhost' IDENTIFIED BY '{password}'; "
        f"CREATE USER '{db_user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"GRANT ALL ON `{db}`.* TO {users};",
    )
    _write(
        run.tmp / "etc" / "slurmdbd.conf",
        f"""{MARKER}
AuthType=auth/munge
DbdHost={host}
DbdPort={dbd_port}
SlurmUser=root
PidFile={run.tmp}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost={db_host}
StoragePort={db_port}
StorageUser={db_user}
StoragePass={password}
StorageLoc={db}
""",
        0o600,  # slurmdbd insists: it holds the password (owned by SlurmUser root)
    )
    lines = [
        "AccountingStorageType=accounting_storage/slurmdbd",
        f"AccountingStorageHost={host}",
        f"AccountingStoragePort={dbd_port}",
    ]
    _write_slurm_conf(run, lines)  # sacctmgr reads the dbd's address from slurm.conf
    run.server.spawn("slurmdbd", [slurmdbd, "-D"], signal.SIGTERM, env=run.env)
    run.server.wait_until(lambda: _answers("127.0.0.1", dbd_port, 0.5), "slurmdbd")
    run.server.wait_until(
        lambda: _ok(["sacctmgr", "-n", "-P", "list", "cluster"], env=run.env), "slurmdbd"
    )
    clusters = run.slurm("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster")
    if CLUSTER_NAME not in clusters.split():
        run.slurm("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
    _log(f"SLURM: started slurmdbd on port {dbd_port} (database {db})")
    return lines


def _accounting(run: _Run, host: str, dbd_port: int) -> list[str] | None:
    """slurm.conf lines for slurmdbd accounting, or None when off or it cannot be started."""
    mode = os.environ.get(ACCOUNTING_ENV, "").strip()
    if mode == "0":
        _log(f"SLURM: accounting off ({ACCOUNTING_ENV}=0): no slurmdbd, sacct does not work")
        return None
    started = len(run.server.procs)
    try:
        return _start_slurmdbd(run, host, dbd_port)
    except Exception as exc:
        if mode == "1":
            raise
        _log(
            f"SLURM: accounting off: slurmdbd could not be started ({exc}); set "
            f"{ACCOUNTING_ENV}=1 to make this an error"
        )
        for proc, sig in reversed(run.server.procs[started:]):
            if proc.poll() is None:
                proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        del run.server.procs[started:]
        return None


# --------------------------------------------------------------------------- SLURM


def _write_slurm_conf(run: _Run, accounting: list[str]) -> None:
    c = run.cluster_settings
    text = "\n".join(
        [
            f"{MARKER} (pid {os.getpid()}, {run.tmp}): a private single-node test cluster",
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={c['hostname']}",
            f"SlurmctldPort={c['ctld_port']}",
            f"SlurmdPort={c['slurmd_port']}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "DefMemPerCPU=1024",  # else a job takes the whole node's memory
            f"StateSaveLocation={run.tmp}/state",
            f"SlurmdSpoolDir={run.tmp}/spool",
            f"SlurmctldPidFile={run.tmp}/run/slurmctld.pid",
            f"SlurmdPidFile={run.tmp}/run/slurmd.pid",
            f"PlugStackConfig={run.tmp}/etc/plugstack.conf",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={run.tmp}/jobcomp.log",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=5",
            *(accounting or ["AccountingStorageType=accounting_storage/none"]),
            "MinJobAge=300",
            # More CPUs than the machine has (CPUS_ENV): slurmd takes the configured ones.
            *(["SlurmdParameters=config_overrides"] if os.environ.get(CPUS_ENV) else []),
            "ReturnToService=2",
            "KillWait=5",
            "InactiveLimit=0",
            "MailProg=/bin/true",
            f"NodeName={c['hostname']} CPUs={c['cpus']} RealMemory={c['real_memory_mb']} "
            "State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )
    _write(run.tmp / "etc" / "slurm.conf", text)
    backup = STATE_DIR / "slurm.conf.orig"
    if not run.wrote_conf:
        old = SLURM_CONF.read_text() if SLURM_CONF.exists() else None
        if old is not None and not old.startswith(MARKER) and not backup.exists():
            _write(backup, old)  # someone else's: put back at exit
        run.wrote_conf = True
    _mkdir(SLURM_CONF.parent)
    _write(SLURM_CONF.with_suffix(".conf.tmp"), text).replace(SLURM_CONF)


def _restore_slurm_conf() -> None:
    backup = STATE_DIR / "slurm.conf.orig"
    with contextlib.suppress(FileNotFoundError):
        if SLURM_CONF.read_text().startswith(MARKER):
            SLURM_CONF.unlink()
    if backup.exists():
        shutil.copy2(backup, SLURM_CONF)
        backup.unlink()


def _node_state(run: _Run) -> str:
    try:
        return run.slurm("sinfo", "-h", "-o", "%T", timeout=10).strip()
    except RuntimeError:
        return ""


def _start(run: _Run) -> TestCluster:
    started = time.monotonic()
    if os.geteuid() != 0:
        raise RuntimeError(
            "the SLURM test cluster needs root (slurmd starts jobs as another user, sshd, "
            "/etc/slurm/slurm.conf)"
        )
    bins = _binaries(SLURM_PACKAGES)
    run.lock = _take_lock()
    waited, started = time.monotonic() - started, time.monotonic()
    _clear_stale_run()
    run.registry = {"owner": os.getpid(), "run_id": run.run_id, "tmpdir": str(run.tmp)}
    run.save_registry()
    tmp = run.tmp
    os.chmod(tmp, 0o755)  # the user reads the module shim, writes its workdir
    for d in ("etc", "run", "spool", "modules"):
        _mkdir(tmp / d)
    _mkdir(tmp / "state", 0o700)
    _write(tmp / "etc" / "plugstack.conf", "")
    run.env = {**os.environ, "SLURM_CONF": str(tmp / "etc" / "slurm.conf"), RUN_ENV: run.run_id}
    hostname = _hostname()
    _ensure_munge(run, bins["munged"])
    user = _ensure_user()
    ssh = _start_sshd(run, bins["sshd"], user)
    setup = _write_modules(tmp)
    workdir = _mkdir(tmp / "work", 0o755, user)
    local_workdir = _mkdir(tmp / "local-work")
    ctld_port, slurmd_port, dbd_port = _free_ports(3)
    run.cluster_settings = {
        "hostname": hostname,
        "ctld_port": ctld_port,
        "slurmd_port": slurmd_port,
        "cpus": int(os.environ.get(CPUS_ENV) or 0) or os.cpu_count() or 1,
        "real_memory_mb": _real_memory_mb(),
    }
    if os.environ.get(CPUS_ENV):  # and DefMemPerCPU's worth of memory for each
        c = run.cluster_settings
        c["real_memory_mb"] = max(c["real_memory_mb"], c["cpus"] * 1024)
    accounting = _accounting(run, hostname, dbd_port)
    _write_slurm_conf(run, accounting or [])
    run.server.port = ctld_port
    run.server.spawn("slurmctld", [bins["slurmctld"], "-D"], signal.SIGTERM, env=run.env)
    run.server.wait_until(lambda: _answers(hostname, ctld_port, 0.5), "slurmctld")
    run.server.spawn("slurmd", [bins["slurmd"], "-D"], signal.SIGTERM, env=run.env)
    run.server.wait_until(lambda: _node_state(run) == "idle", "slurmd (node idle)")
    cluster = TestCluster(
        hostname=hostname,
        ssh_host="127.0.0.1",
        user=USER,
        workdir=str(workdir),
        setup=setup,
        module_name=MODULE,
        partition=PARTITION,
        cpus=run.cluster_settings["cpus"],
        real_memory_mb=run.cluster_settings["real_memory_mb"],
        jobcomp_log=tmp / "jobcomp.log",
        accounting=accounting is not None,
        local_workdir=str(local_workdir),
        tmpdir=tmp,
        **ssh,
    )
    # a real login, finding the SLURM commands and the system Python
    check = "command -v sbatch squeue scontrol sacct scancel >/dev/null && /usr/bin/python3 -V"
    try:
        _run(cluster.ssh_argv(check), timeout=30)
    except RuntimeError as exc:
        raise RuntimeError(f"ssh {USER}@127.0.0.1 does not work: {exc}") from exc
    _log(
        f"SLURM: test cluster {CLUSTER_NAME} up in {time.monotonic() - started:.1f} s "
        f"(node {hostname}, ssh port {cluster.ssh_port}, accounting "
        f"{'on' if cluster.accounting else 'off'}, in {tmp})"
        + (
            f" after waiting {waited:.0f} s for another test process's cluster"
            if waited > 1
            else ""
        )
    )
    return cluster


_cluster: _Run | None = None
_failure: Exception | None = None  # a start that failed is not tried again in this process
_lock = threading.Lock()


def slurm_cluster() -> TestCluster:
    """The process-wide test cluster, started on first call (see the module docstring)."""
    global _cluster, _failure
    with _lock:
        if _failure is not None:
            raise RuntimeError(f"the SLURM test cluster failed to start earlier: {_failure}")
        if _cluster is None:
            run = _Run(
                _PrivateServer("slurm", tempfile.mkdtemp(prefix="submitter-slurm-")),
                secrets.token_hex(6),
            )
            try:
                run.cluster = _start(run)
            except BaseException as exc:
                logs = run.server.logs()
                run.stop()
                if not isinstance(exc, Exception):
                    raise
                _failure = exc
                if "--- " not in str(exc) and logs:  # wait_until's messages hold the logs
                    _failure = RuntimeError(f"the SLURM test cluster did not start: {exc}\n{logs}")
                    raise _failure from exc
                raise
            _cluster = run
        assert _cluster.cluster is not None
        return _cluster.cluster


def stop_slurm_cluster() -> None:
    """Stop the cluster this process started (also runs at interpreter exit)."""
    global _cluster
    with _lock:
        if _cluster is not None:
            run, _cluster = _cluster, None
            run.stop()


atexit.register(stop_slurm_cluster)

__all__ = ["TestCluster", "slurm_cluster", "stop_slurm_cluster"]
