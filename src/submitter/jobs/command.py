"""`command`: the user's own command, run on a Submitter worker in a sandbox.

The same spec sections as a `slurm` job where they mean the same (`environment.venv`,
`files.provide` / `files.collect`, `env`: `submitter.usercode.spec`), run here instead of
on a cluster:

1. a job folder of its own on the worker host (removed afterwards, or by the sweep of the
   next pool process if this one was killed), the provided files staged into it, the venv
   built once per host in a sandbox of its own, under a lock, and reused read-only
   (`submitter.usercode.venv`, the key of the HPC venvs);
2. the command in the sandbox (`submitter.sandbox`: its own namespaces, only its folder
   writable, limits the kernel or a watchdog holds) with an allow-listed environment, its
   output streamed into the job log; the metrics it writes to `$SUBMITTER_METRICS` are
   read into the database while it runs (`submitter.jobmetrics`), never following a link;
3. the files matching `files.collect` (regular files with one link only), and
   stdout/stderr, become the job's artifacts.

Running code on workers is what this kind is for, so it is a permission: role `user` or
higher (as every submit), `SUBMITTER_COMMAND_JOBS_ENABLED` (checked at submit and again on
the worker), and where no sandbox can be had, role `admin` (`submitter.sandbox.refusal`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, select

from submitter import sandbox
from submitter.db.models import Job
from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.slurm import parse_size
from submitter.hpc.staging import CONTROL_DIR
from submitter.hpc.transport import LocalTransport
from submitter.jobmetrics import HELPER, METRICS_FILE
from submitter.jobmetrics.service import Follower, MetricsSink
from submitter.jobs.context import (
    JobCancelled,
    JobContext,
    JobFailed,
    folder_prefix,
    remove_tree,
    sweep_folders,
)
from submitter.jobs.registry import JobKind, ResolvedSpec
from submitter.sandbox import bwrap, cgroups, supervise
from submitter.security import owner_role
from submitter.usercode import process
from submitter.usercode.spec import (
    EnvVars,
    Files,
    Venv,
    collect_from_folder,
    resolve_provided,
    stage_provided,
    venv_reference_errors,
)
from submitter.usercode.venv import VenvFailed, build_in_sandbox, venv_path

if TYPE_CHECKING:
    from submitter.config import Settings
    from submitter.runtime import Runtime

#: Artifacts holding the whole output (the log has the first lines of each).
STDOUT, STDERR = "stdout.log", "stderr.log"
#: The artifact holding a venv build's whole output (pip's, in the job log too, cut).
VENV_LOG = "venv-build.log"
_SIZE = r"^\d{1,12}[KMGT]?$"
VENV_TIMEOUT_SECONDS = 3600.0


class CommandResources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="CPUs: the thread variables (OMP_NUM_THREADS, ...) and the CPU affinity.",
    )
    memory: str | None = Field(
        default=None,
        pattern=_SIZE,
        description="e.g. 512M: the memory of all its processes together (a control group or "
        "the sandbox's watchdog), and an address-space limit (RLIMIT_AS) on each.",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=4_194_304,
        description="Processes (and, where control groups hold it, threads) at once; "
        "default SUBMITTER_COMMAND_MAX_PROCESSES.",
    )
    disk: str | None = Field(
        default=None,
        pattern=_SIZE,
        description="e.g. 2G: what its folder may hold, and any one file it writes; default "
        "SUBMITTER_COMMAND_MAX_DISK.",
    )

    def memory_bytes(self) -> int | None:
        return parse_size(self.memory)


class CommandEnvironment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    venv: Venv | None = None


class CommandSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] | str = Field(
        description="An argument list (run as is), or a string run by `bash -c`."
    )
    environment: CommandEnvironment = Field(default_factory=CommandEnvironment)
    files: Files = Field(default_factory=Files)
    env: EnvVars
    timeout_seconds: float | None = Field(default=None, gt=0, le=30 * 86400)
    resources: CommandResources = Field(default_factory=CommandResources)

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | str) -> list[str] | str:
        parts = [value] if isinstance(value, str) else value
        if not parts or not parts[0].strip():
            raise ValueError("must not be empty")
        if len(parts) > 10_000 or sum(len(p) for p in parts) > 1 << 20:
            raise ValueError("at most 10000 arguments and 1 MiB in all")
        if any("\x00" in p for p in parts):
            raise ValueError("must not contain NUL bytes")
        return value

    @model_validator(mode="after")
    def _no_submitter_variables(self) -> CommandSpec:
        ours = [name for name in self.env if name.startswith("SUBMITTER_")]
        if ours:
            raise ValueError(f"env: SUBMITTER_* names are Submitter's own: {', '.join(ours)}")
        return self

    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["bash", "-c", self.command]
        return list(self.command)


# --------------------------------------------------------------------------- submit time

DISABLED = (
    "command jobs are turned off here (SUBMITTER_COMMAND_JOBS_ENABLED); "
    "an operator may turn them on"
)


def _resolve_spec(runtime: Runtime, connection: Connection, spec: dict[str, Any]) -> ResolvedSpec:
    if not runtime.settings.command_jobs_allowed:
        error = {"loc": ["body", "kind"], "msg": DISABLED, "type": "kind_disabled"}
        return spec, [], [{**error, "input": "command"}]
    resolved, dataset_ids, errors = resolve_provided(connection, spec)
    errors += venv_reference_errors(spec, runtime.settings.venv_direct_references)
    return resolved, dataset_ids, errors


def _admit(runtime: Runtime, connection: Connection, owner: str) -> str | None:
    """Why this owner may not run a command job here (no sandbox and not an admin)."""
    return sandbox.refusal(runtime.settings, owner_role(connection, owner), on_worker=False)


# --------------------------------------------------------------------------- on a worker


def run(spec: CommandSpec, ctx: JobContext) -> dict[str, Any]:
    if not ctx.runtime.settings.command_jobs_allowed:
        raise JobFailed(f"{DISABLED} (on this worker)")
    with ctx.runtime.engine.connect() as connection:
        owner = connection.scalar(select(Job.owner).where(Job.id == ctx.job_id))
        role = owner_role(connection, owner) if owner else None
    refused = sandbox.refusal(ctx.runtime.settings, role, on_worker=True)
    if refused is not None:
        raise JobFailed(f"not run on this worker: {refused}")
    sandboxed = sandbox.host_mode(ctx.runtime.settings).sandboxed
    sweep_folders()
    cgroups.sweep()
    folder = Path(tempfile.mkdtemp(prefix=f"{folder_prefix(ctx.job_id)}command-"))
    try:
        return _run_in(folder, spec, ctx, sandboxed)
    finally:
        remove_tree(folder)


def _run_in(folder: Path, spec: CommandSpec, ctx: JobContext, sandboxed: bool) -> dict[str, Any]:
    ctx.progress(phase="preparing", message="staging files")
    control = folder / CONTROL_DIR
    (control / "lib").mkdir(parents=True)
    (control / "tmp").mkdir()
    shutil.copyfile(HELPER, control / "lib" / HELPER.name)
    transport = LocalTransport(ClusterConfig(name="worker", transport="local", workdir="/"))
    stage_provided(ctx, transport, str(folder), spec.files.provide)
    # Seen from inside: the sandbox shows the folder at bwrap.FOLDER and its tmp as /tmp.
    inside = bwrap.FOLDER if sandboxed else str(folder)
    tmp = "/tmp" if sandboxed else str(control / "tmp")
    limits = supervise.Limits(
        memory_bytes=spec.resources.memory_bytes(),
        processes=spec.resources.processes or ctx.runtime.settings.command_max_processes,
        disk_bytes=parse_size(spec.resources.disk or ctx.runtime.settings.command_max_disk),
    )
    ours = {
        "SUBMITTER_JOB_ID": ctx.job_id,
        "TMPDIR": tmp,
        "PYTHONUNBUFFERED": spec.env.get("PYTHONUNBUFFERED", "1"),  # lines as they come
    }
    if sandboxed:  # the worker's PATH names folders the sandbox does not show
        ours["PATH"] = sandbox_path()
        ours["HOME"] = inside
    if spec.resources.cpus:
        limits.cpus = process.pick_cpus(spec.resources.cpus, ctx.job_id)
        ours.update({name: str(len(limits.cpus)) for name in process.THREAD_VARIABLES})
        ctx.log(f"CPUs {','.join(map(str, limits.cpus))} ({len(limits.cpus)} threads)")
    env = process.job_environment(os.environ, spec.env, ours)
    view = bwrap.View(folder, read_only=extra_paths(ctx.runtime.settings))
    venv = None
    if spec.environment.venv:
        venv = _ensure_venv(spec.environment.venv, ctx, view, env, limits, sandboxed)
        view = bwrap.View(folder, read_only=[*view.read_only, venv])
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = f"{venv}/bin{os.pathsep}{env['PATH']}"
    ctx.check_cancelled()
    env["SUBMITTER_METRICS"] = f"{inside}/{CONTROL_DIR}/{METRICS_FILE}"
    env["PYTHONPATH"] = ":".join(
        p for p in (f"{inside}/{CONTROL_DIR}/lib", spec.env.get("PYTHONPATH")) if p
    )
    limits.timeout_seconds = spec.timeout_seconds

    sink = MetricsSink(ctx.runtime, ctx.job_id, ctx.log)
    sink.clear()
    follower = Follower(sink, control / METRICS_FILE, root=folder)
    follower.start()
    argv = spec.argv()
    ctx.progress(phase="running", message=f"running {argv[0]}")
    ctx.log(f"running {argv!r}" if len(repr(argv)) < 500 else f"running {argv[0]} ...")
    try:
        outcome = _run(ctx, argv, view, sandboxed, env, limits, ctx.workdir / STDOUT)
    finally:
        follower.finish()
    for name in (STDOUT, STDERR):
        path = ctx.workdir / name
        if path.exists() and not path.stat().st_size:
            path.unlink()
    if outcome.stopped_for == "cancelled":
        ctx.log("cancelled: the command was stopped" + (" (SIGKILL)" if outcome.killed else ""))
        raise JobCancelled()
    collected = collect_from_folder(ctx, folder, spec.files.collect) if spec.files.collect else []
    result = {
        "exit_code": outcome.exit_code,
        "elapsed_seconds": outcome.elapsed_seconds,
        "cpu_seconds": outcome.cpu_seconds,
        "max_rss_bytes": outcome.max_rss_bytes,
        "venv": venv,
        "collected": collected,
        "metrics": sink.count,
        "sandboxed": sandboxed,
    }
    failure = _failure(spec, outcome, ctx.runtime.settings)
    if failure is not None:
        raise JobFailed(failure, result)
    ctx.log(f"command exited with code 0 after {outcome.elapsed_seconds:.1f} s")
    return result


def _run(
    ctx: JobContext,
    argv: list[str],
    view: bwrap.View,
    sandboxed: bool,
    env: dict[str, str],
    limits: supervise.Limits,
    stdout: Path,
    stderr: Path | None = None,
) -> supervise.Outcome:
    """One process of the job, sandboxed, reporting to the job (stderr: STDERR if None)."""
    supervision = supervise.Supervision(
        # The log callback, not ctx.log: user output is the job's, not the worker's own
        # log (nor the service log in the database).
        log_line=lambda level, text: ctx.log_line(level, text),
        cancelled=ctx.cancelled,
        grace_seconds=ctx.runtime.settings.cancel_grace_seconds,
        process_groups=ctx.process_groups,
    )
    return supervise.run(
        supervision,
        argv,
        view=view,
        sandboxed=sandboxed,
        env=env,
        limits=limits,
        stdout=stdout,
        stderr=stderr or ctx.workdir / STDERR,
        job_id=ctx.job_id,
        cgroups=ctx.runtime.settings.sandbox_cgroups,
    )


def sandbox_path() -> str:
    """PATH inside the sandbox: the base Python's folder, then the system's."""
    python_bin = os.path.dirname(bwrap.python_executable())
    system = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    return os.pathsep.join(dict.fromkeys([python_bin, *system]))


def extra_paths(settings: Settings) -> list[str]:
    return [p.strip() for p in settings.sandbox_paths.split(",") if p.strip()]


def _limit_of(spec: CommandSpec, settings: Settings, name: str) -> tuple[object, str]:
    """A limit's figure for a job, and where it was set (the spec or the operator)."""
    own: object = getattr(spec.resources, name)
    if own is not None:
        return own, f"resources.{name}"
    if name == "processes":
        return settings.command_max_processes, "SUBMITTER_COMMAND_MAX_PROCESSES"
    return settings.command_max_disk, "SUBMITTER_COMMAND_MAX_DISK"


def _failure(spec: CommandSpec, outcome: supervise.Outcome, settings: Settings) -> str | None:
    """Why the job failed, in words that name the limit that ended it; None if it did not."""
    how = "SIGTERM, then SIGKILL" if outcome.killed else "SIGTERM"
    if outcome.exceeded is not None:
        passed = outcome.exceeded
        limit, where = _limit_of(spec, settings, passed.limit)
        return f"exceeded its {passed.limit} limit of {limit} ({where}): {passed.how}"
    if outcome.stopped_for == "timeout":
        return f"timed out after {spec.timeout_seconds:g} s (timeout_seconds); stopped with {how}"
    if outcome.exit_code == 0:
        return None
    code = outcome.exit_code
    said = outcome.memory_sign()
    if spec.resources.memory and said is not None:
        return (
            f"exceeded its memory limit of {spec.resources.memory} (resources.memory, an "
            f"address-space limit): {said}"
        )
    if outcome.signal is not None:
        text = f"command was killed by {outcome.signal}"
        if outcome.signal == "SIGXFSZ":
            disk = spec.resources.disk or settings.command_max_disk
            text += f": a file passed its disk limit of {disk} (resources.disk)"
        elif spec.resources.memory and outcome.signal in ("SIGSEGV", "SIGABRT", "SIGBUS"):
            text += f", likely its memory limit of {spec.resources.memory} (resources.memory)"
        return text
    last = next((line for line in reversed(outcome.stderr_tail) if line.strip()), "")
    return f"command exited with code {code}" + (f": {last.strip()[:500]}" if last else "")


def _ensure_venv(
    venv: Venv,
    ctx: JobContext,
    view: bwrap.View,
    env: dict[str, str],
    limits: supervise.Limits,
    sandboxed: bool,
) -> str:
    """The venv on this worker host: built by the first job needing it, in a sandbox of its
    own (the job's environment, the network), under a lock; reused by later jobs."""
    python = bwrap.python_executable()
    path = venv_path(
        str(ctx.runtime.settings.home),
        venv.name,
        venv.packages,
        system_site_packages=venv.system_site_packages,
        python=python,
        modules=[],
    )
    ctx.progress(message=f"venv {venv.name}: creating or reusing")
    log = ctx.workdir / VENV_LOG
    build_env = {**env, "HOME": "/tmp" if sandboxed else env.get("TMPDIR", "/tmp")}
    build_env.update({"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    build_limits = supervise.Limits(
        memory_bytes=limits.memory_bytes,
        processes=limits.processes,
        disk_bytes=limits.disk_bytes,
        timeout_seconds=VENV_TIMEOUT_SECONDS,
    )
    failed: list[supervise.Outcome] = []

    def step(argv: list[str], writable: Sequence[tuple[str, str]]) -> int:
        step_view = bwrap.View(view.folder, view.read_only, writable, network=True)
        outcome = _run(ctx, argv, step_view, sandboxed, build_env, build_limits, log, log)
        if outcome.stopped_for == "cancelled":
            raise JobCancelled()
        if outcome.exit_code != 0 or outcome.stopped_for:
            failed.append(outcome)
            return outcome.exit_code or 1
        return 0

    try:
        how = build_in_sandbox(
            path,
            python=python,
            packages=venv.packages,
            system_site_packages=venv.system_site_packages,
            run=step,
            sandboxed=sandboxed,
            timeout=VENV_TIMEOUT_SECONDS,
        )
    except VenvFailed as error:
        last = ""
        if failed:
            said = [line for line in failed[-1].stderr_tail if line.strip()]
            last = f": {said[-1].strip()[:300]}" if said else ""
        raise JobFailed(
            f"creating venv {venv.name} on this worker failed: {error}{last} "
            f"(its whole output: the job log and {VENV_LOG})"
        ) from None
    ctx.log(f"venv {venv.name} {how}: {path}")
    return path


KIND = JobKind(
    name="command",
    spec_model=CommandSpec,
    run=run,
    description="Your own command on a worker, sandboxed: a venv, staged files, limits, metrics.",
    resolve_spec=_resolve_spec,
    admit=_admit,
)
