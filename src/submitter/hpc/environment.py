"""The software environment of a SLURM job: modules, a venv made once, the batch wrapper.

The venv's key, folder (`<workdir>/submitter/venvs/<name>-<key>`) and build script are
`submitter.usercode.venv`, shared with the `command` kind; here it runs on the cluster,
under an `flock` there, so it holds across workers and Submitter installations sharing one
account.

Every user value reaches the shell as a positional parameter (`"$@"`) or through
`shlex.quote`; the only unquoted text is the cluster's `setup` (operator configuration).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from submitter.hpc.clusters import ClusterConfig
from submitter.usercode import venv as venvs


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
    """Create the venv at `path` on the cluster unless it is ready (`submitter.usercode.venv`:
    the same recipe as a command job's venv on a worker), after setup and modules."""
    return venvs.create_venv_argv(
        [*cluster.setup, *_module_lines(modules)],
        path,
        cluster.python,
        packages,
        system_site_packages=system_site_packages,
    )


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
    metrics_file: str | None = None,
    helper_dir: str | None = None,
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
    # After the spec's env: Submitter's own win, and a PYTHONPATH set by a module or the
    # spec is kept behind the folder of the metrics helper.
    if metrics_file is not None:
        lines.append(f"export SUBMITTER_METRICS={shlex.quote(metrics_file)}")
    if helper_dir is not None:
        lines.append(f"export PYTHONPATH={shlex.quote(helper_dir)}${{PYTHONPATH:+:$PYTHONPATH}}")
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
