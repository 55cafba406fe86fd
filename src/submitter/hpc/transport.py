"""Running commands and moving files on a cluster: over SSH (paramiko) or on this host.

A `Transport` is one live connection to one cluster. Commands are given as argument lists
and joined with `shlex.join`, so no user value is ever interpreted by the remote shell;
the cluster's `setup` lines (operator configuration, trusted) run first, in the same
`bash -c`. Files move over SFTP, never through a shell.

Host keys: only the configured known_hosts file is consulted and an unknown or changed key
is refused (`RejectPolicy`): a cluster that cannot prove who it is gets nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from submitter.hpc.clusters import ClusterConfig, ClusterError

logger = logging.getLogger(__name__)

#: Walking a job folder stops after this many entries (a runaway job writing millions of
#: files must not hang collection).
MAX_WALK_ENTRIES = 100_000


class HostKeyRefused(ClusterError):
    """The cluster's host key is not in the configured known_hosts (or differs from it)."""


class ClusterUnreachable(ClusterError):
    """No SSH session could be opened (network, authentication, key file)."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> CommandResult:
        if not self.ok:
            raise CommandFailed(self)
        return self


class CommandFailed(ClusterError):
    def __init__(self, result: CommandResult) -> None:
        detail = (result.stderr.strip() or result.stdout.strip())[-1500:]
        super().__init__(f"{result.argv[0]} exited with {result.returncode}: {detail}")
        self.result = result


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the walked folder, '/'-separated
    size: int


class Transport(Protocol):
    cluster: ClusterConfig

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult: ...

    def put(self, source: IO[bytes], remote: str, mode: int = 0o644) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def get_into(self, remote: str, target: IO[bytes]) -> None: ...

    def makedirs(self, remote: str) -> None: ...

    def walk(self, remote_dir: str) -> Iterator[RemoteFile]: ...

    def exists(self, remote: str) -> bool: ...

    def home(self) -> str: ...

    def expand(self, remote: str) -> str:
        """`~` and `~/...` against the remote home: commands get quoted, absolute paths."""
        ...

    def is_alive(self) -> bool: ...

    def close(self) -> None: ...


def shell_script(cluster: ClusterConfig, argv: Sequence[str]) -> str:
    """The script a command runs as: setup lines, then the quoted command."""
    return "\n".join([*cluster.setup, shlex.join(argv)])


def _remote_command(cluster: ClusterConfig, argv: Sequence[str]) -> str:
    # Run through bash explicitly: the login shell may be csh; quoting is POSIX-sh quoting.
    return "exec bash -c " + shlex.quote(shell_script(cluster, argv))


class LocalTransport:
    """A cluster whose SLURM commands run on this host (Submitter on a login node)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        try:
            done = subprocess.run(
                ["bash", "-c", shell_script(self.cluster, argv)],
                input=stdin,
                capture_output=True,
                timeout=timeout or self.cluster.command_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ClusterError(f"{argv[0]} timed out after {error.timeout:.0f} s") from None
        return CommandResult(
            tuple(argv),
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def put(self, source: IO[bytes], remote: str, mode: int = 0o644) -> None:
        target = Path(self.expand(remote))
        partial = target.with_name(f".{target.name}.part")
        with open(partial, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.chmod(partial, mode)
        os.replace(partial, target)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(self.expand(remote), local)

    def get_into(self, remote: str, target: IO[bytes]) -> None:
        with open(self.expand(remote), "rb") as source:
            shutil.copyfileobj(source, target)

    def makedirs(self, remote: str) -> None:
        Path(self.expand(remote)).mkdir(parents=True, exist_ok=True)

    def walk(self, remote_dir: str) -> Iterator[RemoteFile]:
        root = Path(self.expand(remote_dir))
        for count, path in enumerate(root.rglob("*")):
            if count >= MAX_WALK_ENTRIES:
                return
            if path.is_file() and not path.is_symlink():
                yield RemoteFile(path.relative_to(root).as_posix(), path.stat().st_size)

    def exists(self, remote: str) -> bool:
        return os.path.lexists(self.expand(remote))

    def home(self) -> str:
        return str(Path.home())

    def is_alive(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def expand(self, remote: str) -> str:
        return os.path.expanduser(remote)


class SSHTransport:
    """One SSH connection (paramiko) with an SFTP channel opened on first use."""

    def __init__(self, cluster: ClusterConfig) -> None:
        import paramiko

        self.cluster = cluster
        self._lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        client = paramiko.SSHClient()
        assert cluster.known_hosts is not None and cluster.key_file is not None
        try:
            client.load_host_keys(str(cluster.known_hosts))
        except OSError as error:
            raise HostKeyRefused(
                f"cluster {cluster.name}: cannot read known_hosts {cluster.known_hosts}: "
                f"{error.strerror}"
            ) from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                hostname=cluster.host or "",
                port=cluster.port,
                username=cluster.user,
                key_filename=str(cluster.key_file),
                passphrase=cluster.passphrase(),
                allow_agent=False,
                look_for_keys=False,
                timeout=cluster.connect_timeout,
                banner_timeout=cluster.connect_timeout,
                auth_timeout=cluster.connect_timeout,
            )
        except paramiko.BadHostKeyException as error:
            client.close()
            raise HostKeyRefused(
                f"cluster {cluster.name}: host key of {cluster.host}:{cluster.port} does not "
                f"match {cluster.known_hosts} (got {error.key.get_name()} "
                f"{error.key.get_fingerprint().hex()}); refusing to connect"
            ) from None
        except paramiko.SSHException as error:
            client.close()
            if "not found in known_hosts" in str(error):
                raise HostKeyRefused(
                    f"cluster {cluster.name}: host {cluster.host}:{cluster.port} is not in "
                    f"{cluster.known_hosts}; add its key there (ssh-keyscan, checked out of "
                    "band) — unknown host keys are refused"
                ) from None
            raise ClusterUnreachable(f"cluster {cluster.name}: {error}") from None
        except (OSError, EOFError) as error:
            client.close()
            raise ClusterUnreachable(
                f"cluster {cluster.name}: cannot connect to {cluster.host}:{cluster.port}: {error}"
            ) from None
        self._client = client
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)

    def run(
        self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None
    ) -> CommandResult:
        import paramiko

        limit = timeout or self.cluster.command_timeout
        try:
            channel_in, channel_out, channel_err = self._client.exec_command(
                _remote_command(self.cluster, argv), timeout=limit
            )
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            # Read both streams to the end before asking for the status (no deadlock on
            # large output: paramiko buffers stderr separately).
            out = channel_out.read()
            err = channel_err.read()
            code = channel_out.channel.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError) as error:
            raise ClusterUnreachable(
                f"cluster {self.cluster.name}: {argv[0]} did not complete: {error}"
            ) from None
        return CommandResult(
            tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def _sftp_client(self):  # type: ignore[no-untyped-def]
        with self._lock:
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
            return self._sftp

    def put(self, source: IO[bytes], remote: str, mode: int = 0o644) -> None:
        sftp = self._sftp_client()
        target = self.expand(remote)
        path = PurePosixPath(target)
        partial = str(path.with_name(f".{path.name}.part"))
        sftp.putfo(source, partial)
        sftp.chmod(partial, mode)
        sftp.posix_rename(partial, target)

    def get(self, remote: str, local: Path) -> None:
        self._sftp_client().get(self.expand(remote), str(local))

    def get_into(self, remote: str, target: IO[bytes]) -> None:
        self._sftp_client().getfo(self.expand(remote), target)

    def makedirs(self, remote: str) -> None:
        sftp = self._sftp_client()
        path = PurePosixPath(self.expand(remote))
        missing: list[str] = []
        current = path
        while str(current) not in ("/", "."):
            try:
                sftp.stat(str(current))
                break
            except FileNotFoundError:
                missing.append(str(current))
                current = current.parent
        for folder in reversed(missing):
            with contextlib.suppress(OSError):  # a concurrent job made it first
                sftp.mkdir(folder)
        sftp.stat(str(path))

    def walk(self, remote_dir: str) -> Iterator[RemoteFile]:
        sftp = self._sftp_client()
        root = PurePosixPath(self.expand(remote_dir))
        pending = [root]
        seen = 0
        while pending:
            folder = pending.pop()
            for entry in sftp.listdir_attr(str(folder)):
                seen += 1
                if seen > MAX_WALK_ENTRIES:
                    return
                mode = entry.st_mode or 0
                path = folder / entry.filename
                if stat.S_ISDIR(mode):
                    pending.append(path)
                elif stat.S_ISREG(mode):
                    yield RemoteFile(path.relative_to(root).as_posix(), entry.st_size or 0)

    def exists(self, remote: str) -> bool:
        try:
            self._sftp_client().lstat(self.expand(remote))
            return True
        except FileNotFoundError:
            return False

    def home(self) -> str:
        if self._home is None:
            self._home = self._sftp_client().normalize(".")
        return self._home

    def is_alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        self._client.close()

    def expand(self, remote: str) -> str:
        # SFTP has no shell: `~` is expanded here, against the remote home.
        if remote == "~" or remote.startswith("~/"):
            return self.home() + remote[1:]
        return remote


def connect(cluster: ClusterConfig) -> Transport:
    if cluster.transport == "local":
        return LocalTransport(cluster)
    return SSHTransport(cluster)
