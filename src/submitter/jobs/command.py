"""`command`: the user's own command, run on a Submitter worker.

The same spec sections as a `slurm` job where they mean the same (`environment.venv`,
`files.provide` / `files.collect`, `env`: `submitter.usercode.spec`), run here instead of
on a cluster:

1. a job folder of its own on the worker host (removed afterwards), the provided files
   staged into it, the venv created once per host under a lock and reused
   (`submitter.usercode.venv`, the recipe and key of the HPC venvs);
2. the command in its own process group with an allow-listed environment, its limits
   (`resources`, `timeout_seconds`) and its output streamed into the job log
   (`submitter.usercode.process`); the metrics it writes to `$SUBMITTER_METRICS` are
   read into the database while it runs (`submitter.jobmetrics`);
3. the files matching `files.collect`, and stdout/stderr, become the job's artifacts.

Running code on workers is what this kind is for, so it is a permission: role `user` or
higher (as every submit), and `SUBMITTER_COMMAND_JOBS_ENABLED` (checked at submit and
again on the worker). It isolates secrets and resources, not a hostile user: the command
runs as the worker's OS user (see the README).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection

from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.staging import CONTROL_DIR
from submitter.hpc.transport import LocalTransport
from submitter.jobmetrics import HELPER, METRICS_FILE
from submitter.jobmetrics.service import Follower, MetricsSink
from submitter.jobs.context import JobCancelled, JobContext, JobFailed
from submitter.jobs.registry import JobKind, ResolvedSpec
from submitter.usercode import process
from submitter.usercode.spec import (
    EnvVars,
    Files,
    Venv,
    collect_matching,
    resolve_provided,
    stage_provided,
)
from submitter.usercode.venv import create_venv_argv, venv_path

if TYPE_CHECKING:
    from submitter.runtime import Runtime

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
#: Artifacts holding the whole output (the log has the first lines of each).
STDOUT, STDERR = "stdout.log", "stderr.log"
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
        pattern=r"^\d{1,12}[KMGT]?$",
        description="e.g. 512M: an address-space limit (RLIMIT_AS) on the command.",
    )

    def memory_bytes(self) -> int | None:
        if self.memory is None:
            return None
        unit = self.memory[-1] if self.memory[-1] in _UNITS else ""
        return int(self.memory.removesuffix(unit)) * _UNITS[unit]


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
    return resolve_provided(connection, spec)


# --------------------------------------------------------------------------- on a worker


def run(spec: CommandSpec, ctx: JobContext) -> dict[str, Any]:
    if not ctx.runtime.settings.command_jobs_allowed:
        raise JobFailed(f"{DISABLED} (on this worker)")
    folder = Path(tempfile.mkdtemp(prefix=f"submitter-command-{ctx.job_id}-"))
    try:
        return _run_in(folder, spec, ctx)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_in(folder: Path, spec: CommandSpec, ctx: JobContext) -> dict[str, Any]:
    ctx.progress(phase="preparing", message="staging files")
    control = folder / CONTROL_DIR
    (control / "lib").mkdir(parents=True)
    (control / "tmp").mkdir()
    shutil.copyfile(HELPER, control / "lib" / HELPER.name)
    transport = LocalTransport(ClusterConfig(name="worker", transport="local", workdir="/"))
    stage_provided(ctx, transport, str(folder), spec.files.provide)
    venv = _ensure_venv(spec.environment.venv, ctx) if spec.environment.venv else None
    ctx.check_cancelled()

    metrics_file = control / METRICS_FILE
    ours = {
        "SUBMITTER_METRICS": str(metrics_file),
        "SUBMITTER_JOB_ID": ctx.job_id,
        "TMPDIR": str(control / "tmp"),
        "PYTHONPATH": ":".join(p for p in (str(control / "lib"), spec.env.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": spec.env.get("PYTHONUNBUFFERED", "1"),  # lines as they come
    }
    limits = process.Limits(
        memory_bytes=spec.resources.memory_bytes(), timeout_seconds=spec.timeout_seconds
    )
    if spec.resources.cpus:
        limits.cpus = process.pick_cpus(spec.resources.cpus, ctx.job_id)
        ours.update({name: str(len(limits.cpus)) for name in process.THREAD_VARIABLES})
        ctx.log(f"CPUs {','.join(map(str, limits.cpus))} ({len(limits.cpus)} threads)")
    env = process.job_environment(os.environ, spec.env, ours)
    if venv is not None:
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = f"{venv}/bin{os.pathsep}{env['PATH']}"

    sink = MetricsSink(ctx.runtime, ctx.job_id, ctx.log)
    sink.clear()
    follower = Follower(sink, metrics_file)
    follower.start()
    argv = spec.argv()
    ctx.progress(phase="running", message=f"running {argv[0]}")
    ctx.log(f"running {argv!r}" if len(repr(argv)) < 500 else f"running {argv[0]} ...")
    try:
        outcome = process.run_supervised(
            ctx,
            argv,
            cwd=folder,
            env=env,
            limits=limits,
            stdout=ctx.workdir / STDOUT,
            stderr=ctx.workdir / STDERR,
        )
    finally:
        follower.finish()
    for name in (STDOUT, STDERR):
        path = ctx.workdir / name
        if path.exists() and not path.stat().st_size:
            path.unlink()
    if outcome.stopped_for == "cancelled":
        ctx.log("cancelled: the command was stopped" + (" (SIGKILL)" if outcome.killed else ""))
        raise JobCancelled()
    collected = (
        collect_matching(ctx, transport, str(folder), [], spec.files.collect)
        if spec.files.collect
        else []
    )
    result = {
        "exit_code": outcome.exit_code,
        "elapsed_seconds": outcome.elapsed_seconds,
        "cpu_seconds": outcome.cpu_seconds,
        "max_rss_bytes": outcome.max_rss_bytes,
        "venv": venv,
        "collected": collected,
        "metrics": sink.count,
    }
    failure = _failure(spec, outcome)
    if failure is not None:
        raise JobFailed(failure, result)
    ctx.log(f"command exited with code 0 after {outcome.elapsed_seconds:.1f} s")
    return result


def _failure(spec: CommandSpec, outcome: process.Outcome) -> str | None:
    """Why the job failed, in words that name the limit that ended it; None if it did not."""
    how = "SIGTERM, then SIGKILL" if outcome.killed else "SIGTERM"
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
    if code < 0:
        name = signal.Signals(-code).name
        text = f"command was killed by {name}"
        if spec.resources.memory and name in ("SIGSEGV", "SIGABRT", "SIGBUS"):
            text += f", likely its memory limit of {spec.resources.memory} (resources.memory)"
        return text
    last = next((line for line in reversed(outcome.stderr_tail) if line.strip()), "")
    return f"command exited with code {code}" + (f": {last.strip()[:500]}" if last else "")


def _ensure_venv(venv: Venv, ctx: JobContext) -> str:
    """The venv on this worker host: created by the first job needing it, under a lock."""
    base = str(ctx.runtime.settings.home)
    python = sys.executable
    path = venv_path(
        base,
        venv.name,
        venv.packages,
        system_site_packages=venv.system_site_packages,
        python=python,
        modules=[],
    )
    ctx.progress(message=f"venv {venv.name}: creating or reusing")
    argv = create_venv_argv(
        [], path, python, venv.packages, system_site_packages=venv.system_site_packages
    )
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=VENV_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise JobFailed(f"creating venv {venv.name} took over {VENV_TIMEOUT_SECONDS:g} s") from None
    if "waiting:" in done.stderr:
        ctx.log(f"venv {venv.name}: waited for another job creating it")
    if done.returncode != 0:
        tail = done.stderr.strip()[-1500:] or "(no output)"
        raise JobFailed(f"creating venv {venv.name} on this worker failed: {tail}")
    ctx.log(f"venv {venv.name} {done.stdout.strip() or 'ready'}: {path}")
    return path


KIND = JobKind(
    name="command",
    spec_model=CommandSpec,
    run=run,
    description="Your own command on a worker: a venv, staged files, limits, metrics.",
    resolve_spec=_resolve_spec,
)
