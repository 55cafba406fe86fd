"""A venv made once and reused: its key, its folder and the script that builds it.

A venv is keyed by its name, its sorted package list and how it is built (Python, system
site packages, modules loaded first), and lives at `<base>/submitter/venvs/<name>-<key>`.
The first job to need it creates it under an `flock` next to it; later and concurrent jobs
wait for that lock and reuse the result. The lock is a file on the host that builds the
venv (a cluster's login node for `slurm`, the worker host for `command`), so it holds
across worker processes and across Submitter installations sharing the folder.

A cluster builds with `create_venv_argv`'s script over SSH; a worker builds with
`build_in_sandbox`, each step in the job's sandbox (the same `<path>.lock`, taken with the
same `flock` through `filelock`).

Every value reaches the shell as a positional parameter (`"$@"`); the `prelude` lines
(a cluster's setup, `module load` lines) are built by the caller with `shlex.quote`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

#: Marks a finished venv: a creation that died half-way is redone, not reused.
READY_MARK = ".submitter-ready"

_VENV_SCRIPT = r"""
venv=$1; python=$2; system_site=$3; shift 3
mkdir -p -- "$(dirname -- "$venv")" || exit 5
exec 9>"$venv.lock" || exit 5
if ! flock --nonblock 9; then
    echo "waiting: another job is creating $venv" >&2
    flock 9 || exit 5
fi
if [ -f "$venv/READY_MARK" ]; then
    echo reused
    exit 0
fi
rm -rf -- "$venv"
if [ "$system_site" = yes ]; then
    "$python" -m venv --system-site-packages -- "$venv" || exit 3
else
    "$python" -m venv -- "$venv" || exit 3
fi
if [ "$#" -gt 0 ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -- "$@" \
        || { rm -rf -- "$venv"; exit 4; }
fi
touch -- "$venv/READY_MARK"
echo created
""".replace("READY_MARK", READY_MARK)


def venv_path(
    base: str,
    name: str,
    packages: Sequence[str],
    *,
    system_site_packages: bool,
    python: str,
    modules: Sequence[str],
) -> str:
    """Where the venv for this name and package set lives (same inputs, same folder)."""
    identity = json.dumps(
        {
            "packages": sorted(packages),
            "system_site_packages": system_site_packages,
            "python": python,
            "modules": list(modules),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{base}/submitter/venvs/{name}-{key}"


def create_venv_argv(
    prelude: Sequence[str],
    path: str,
    python: str,
    packages: Sequence[str],
    *,
    system_site_packages: bool,
) -> list[str]:
    """`bash -c` argv that creates the venv at `path` unless it is ready, after `prelude`
    (trusted, already quoted lines); it prints `created` or `reused`, and `waiting:` on
    stderr when another job held the lock. Exit 3: venv failed, 4: pip failed."""
    script = "\n".join([*prelude, _VENV_SCRIPT])
    return [
        "bash",
        "-c",
        script,
        "submitter-venv",
        path,
        python,
        "yes" if system_site_packages else "no",
        *packages,
    ]


def build_in_sandbox(
    path: str,
    *,
    python: str,
    packages: Sequence[str],
    system_site_packages: bool,
    run: Callable[[list[str], Sequence[tuple[str, str]]], int],
    sandboxed: bool,
    timeout: float,
) -> str:
    """Make the venv at `path` on this host unless it is ready: `created` or `reused`.

    `run(argv, writable)` runs one step of the build as user code (in the sandbox, with the
    network: pip downloads) with `writable` (host folder, path inside) mounted; it returns
    the exit code. The build happens in a fresh folder next to `path`, mounted at `path`
    inside (a venv holds its own absolute path), and is renamed to `path` when complete: a
    failed or killed build leaves nothing a later job could take for a venv. Jobs then see
    it read-only. The lock is a file next to it: one build per host and key at a time, the
    others wait and reuse it. Without a sandbox (an admin's job), it is built in place.
    """
    from filelock import FileLock, Timeout

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{path}.lock", timeout=timeout):
            if os.path.exists(os.path.join(path, READY_MARK)):
                return "reused"
            shutil.rmtree(path, ignore_errors=True)
            build = (
                tempfile.mkdtemp(prefix=f".build-{os.path.basename(path)}-", dir=Path(path).parent)
                if sandboxed
                else path
            )
            try:
                writable = [(build, path)] if sandboxed else []
                venv = [python, "-m", "venv"]
                if system_site_packages:
                    venv.append("--system-site-packages")
                if run([*venv, "--", path], writable) != 0:
                    raise VenvFailed(f"`{python} -m venv` failed")
                if packages:
                    pip = [f"{path}/bin/python", "-m", "pip", "install"]
                    pip += ["--disable-pip-version-check", "--no-input", "--", *packages]
                    if run(pip, writable) != 0:
                        raise VenvFailed("pip install failed")
                Path(build, READY_MARK).touch()
                if sandboxed:
                    os.rename(build, path)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            return "created"
    except Timeout:
        raise VenvFailed(f"waited over {timeout:g} s for another job building it") from None


class VenvFailed(Exception):
    """A venv could not be built; the message says which step (its output is in the log)."""
