"""A venv made once and reused: its key, its folder and the script that builds it.

A venv is keyed by its name, its sorted package list and how it is built (Python, system
site packages, modules loaded first), and lives at `<base>/submitter/venvs/<name>-<key>`.
The first job to need it creates it under an `flock` next to it; later and concurrent jobs
wait for that lock and reuse the result. The lock is a file on the host that builds the
venv (a cluster's login node for `slurm`, the worker host for `command`), so it holds
across worker processes and across Submitter installations sharing the folder.

Every value reaches the shell as a positional parameter (`"$@"`); the `prelude` lines
(a cluster's setup, `module load` lines) are built by the caller with `shlex.quote`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

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
