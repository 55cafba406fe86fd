"""The bubblewrap command line of a sandbox, and the probe that says whether one starts here.

What the sandbox sees is an allow-list, not the host minus some paths: the system folders
(`/usr` and the `/lib*`, `/bin`, `/sbin` links or folders), the few files of `/etc` that
programs read to start (no `shadow`, no Submitter configuration), the Python that builds
and runs venvs, the operator's extra read-only paths, the venv it uses (read-only) and its
job folder at `/job` (writable), with that folder's `.submitter/tmp` as `/tmp`. It gets
fresh user (uid and gid 65534), PID, mount, IPC, UTS, cgroup and network namespaces
(`--unshare-all`; `--share-net` only for a venv build), its own `/proc` and a minimal
`/dev`, no capabilities, no nested user namespaces, a new session (no TIOCSTI on a
terminal), and it dies with the worker (`--die-with-parent`).

Why this view: Submitter's secrets live in the worker's environment (`/proc/<pid>/environ`,
hidden by the PID namespace and the new `/proc`), in `SUBMITTER_HOME` (the SQLite metadata
DB, venvs, the local artifact store) and in configuration files anywhere on the host (not
mounted). Root-owned files must not be mounted at all: as root, the sandbox's uid maps to
the host's uid 0, so a mounted `0600 root` file would be readable by its owner.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where the job folder appears inside the sandbox.
FOLDER = "/job"
#: The sandbox's uid and gid (Debian's `nobody` / `nogroup`).
UID = GID = 65534
HOSTNAME = "submitter-job"
#: Read-only files and folders of `/etc` that programs need to start and to find things.
ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/xdg/pip",
    "/etc/pip.conf",
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/inputrc",
    "/etc/locale.alias",
)
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PROBE_TIMEOUT = 20.0


def python_executable() -> str:
    """The base interpreter (not the worker's venv) that builds venvs and runs jobs."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def python_roots() -> list[str]:
    """Folders the base interpreter needs that may lie outside `/usr` (pyenv, /opt)."""
    roots = {os.path.realpath(sys.base_prefix), sys.base_prefix}
    executable = python_executable()
    roots.add(os.path.dirname(executable))
    roots.add(os.path.dirname(os.path.realpath(executable)))
    return sorted(r for r in roots if not _under(r, "/usr") and os.path.isdir(r))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class View:
    """What one sandbox sees, in host paths."""

    folder: Path
    #: Host folders shown read-only at the same path (a venv, the operator's extra paths).
    read_only: Sequence[str] = ()
    #: (host folder, path inside): writable besides the job folder (a venv being built).
    writable: Sequence[tuple[str, str]] = ()
    network: bool = False
    #: Bytes of `/dev/shm` (a tmpfs: charged to the memory cgroup where there is one).
    shm_bytes: int = 64 << 20


def argv(view: View, command: Sequence[str], *, info_fd: int, cwd: str = FOLDER) -> list[str]:
    """The bwrap argv that runs `command` in `view`, writing its child's pid to `info_fd`."""
    args = [
        bwrap_path(),
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(UID),
        "--gid",
        str(GID),
        "--disable-userns",
        "--hostname",
        HOSTNAME,
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--info-fd",
        str(info_fd),
    ]
    if view.network:
        args.append("--share-net")
    args += ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL:
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    for path in ETC:
        args += ["--ro-bind-try", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(view.shm_bytes), "--tmpfs", "/dev/shm"]
    args += ["--bind", str(view.folder), FOLDER]
    args += ["--bind", str(view.folder / ".submitter" / "tmp"), "/tmp"]
    # After /tmp: a venv or a Python may live under the host's /tmp (a test's home).
    for root in sorted({*python_roots(), *view.read_only}):
        args += ["--ro-bind", root, root]
    for host, inside in view.writable:
        args += ["--bind", host, inside]
    args += ["--chdir", cwd, "--", *command]
    return args


@functools.cache
def bwrap_path() -> str:
    return shutil.which("bwrap") or "bwrap"


_STARTS = False


def probe() -> str | None:
    """None if a sandbox starts on this host; else why not, in words an operator can act on.

    Run until it succeeds once in this process (then remembered; a failure is not, so a
    bubblewrap installed later is found): a real sandbox (the same namespaces and mounts
    as a job's) running `true`, so a kernel without unprivileged user namespaces, a
    container's seccomp profile or a masked `/proc` are all caught here, not by a job.
    """
    global _STARTS
    if _STARTS:
        return None
    if shutil.which("bwrap") is None:
        return (
            "bubblewrap is not installed on this host (Debian/Ubuntu: apt-get install "
            "bubblewrap; Fedora: dnf install bubblewrap)"
        )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="submitter-probe-") as scratch:
        folder = Path(scratch)
        (folder / ".submitter" / "tmp").mkdir(parents=True)
        read, write = os.pipe()
        try:
            done = subprocess.run(
                argv(View(folder), ["true"], info_fd=write),
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                pass_fds=(write,),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bubblewrap did not start a sandbox: {error}"
        finally:
            os.close(read)
            os.close(write)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return (
            f"bubblewrap cannot start a sandbox here: {said[0][:300]} (a container needs "
            "a seccomp profile allowing user namespaces and systempaths=unconfined: see "
            "deploy/seccomp/)"
        )
    _STARTS = True
    return None
