"""The software environment of a SLURM job: modules, a venv made once, the batch wrapper.

A venv is keyed by its name, its sorted package list and how it is built, and lives at
`<workdir>/submitter/venvs/<name>-<key>`; the first job to need it creates it under an
`flock` on the cluster, later and concurrent jobs wait for that lock and reuse the result.
The lock is on the cluster, so it holds across workers and across Submitter installations
sharing one account.

Every user value reaches the shell as a positional parameter (`"$@"`) or through
`shlex.quote`; the only unquoted text is the cluster's `setup` (operator configuration).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence

from submitter.hpc.clusters import ClusterConfig

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


def _module_lines(modules: Sequence[str]) -> list[str]:
    return [
        f"module load {shlex.quote(m)} || {{ echo {shlex.quote(f'module load {m} failed')} >&2; "
        "exit 2; }"
        for m in modules
    ]


def _with_setup(cluster: ClusterConfig, lines: Sequence[str]) -> str:
    # Setup (e.g. sourcing the site profile that defines `module`) must run in the same shell
    # as the lines using it: shell functions are not inherited by a child `bash -c`.
    return "\n".join([*cluster.setup, *lines])


def check_modules_argv(cluster: ClusterConfig, modules: Sequence[str]) -> list[str]:
    """Load the modules on the login node: a missing one fails the job before sbatch."""
    return ["bash", "-c", _with_setup(cluster, _module_lines(modules)), "submitter-modules"]


def create_venv_argv(
    cluster: ClusterConfig,
    path: str,
    packages: Sequence[str],
    *,
    system_site_packages: bool,
    modules: Sequence[str],
) -> list[str]:
    """Create the venv at `path` unless it is ready; print `created` or `reused`."""
    script = _with_setup(cluster, [*_module_lines(modules), _VENV_SCRIPT])
    return [
        "bash",
        "-c",
        script,
        "submitter-venv",
        path,
        cluster.python,
        "yes" if system_site_packages else "no",
        *packages,
    ]


def batch_wrapper(
    cluster: ClusterConfig,
    *,
    job_id: str,
    folder: str,
    script: str,
    modules: Sequence[str],
    venv: str | None,
    env: dict[str, str],
    times_file: str,
) -> str:
    """The script sbatch runs: environment, then the user's script, then CPU time.

    `times` reports the CPU time of everything the script started; without SLURM
    accounting it is the job's only CPU figure.
    """
    lines = [
        "#!/bin/bash",
        f"# Written by Submitter for job {job_id}. Resources are sbatch options, not here.",
        *cluster.setup,
        *_module_lines(modules),
    ]
    if venv is not None:
        lines.append(f"source {shlex.quote(venv + '/bin/activate')} || exit 2")
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines += [
        f"cd {shlex.quote(folder)} || exit 2",
        f"if head -c 2 {shlex.quote(script)} | grep -q '^#!'; then",
        f"    chmod u+x {shlex.quote(script)} && {shlex.quote(script)}",
        "else",
        f"    bash {shlex.quote(script)}",
        "fi",
        "status=$?",
        f"times > {shlex.quote(times_file)}",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)
