"""`slurm`: a batch job on a SLURM cluster — prepared, submitted, followed, collected.

One job, two turns on a worker with the cluster in between:

1. *prepare and submit* (phase `preparing`): the job folder `<workdir>/submitter/<job id>`,
   the provided files over SFTP, modules checked, the venv created or reused, the batch
   wrapper; then `sbatch --parsable`. The SLURM id is committed as `external_id` before
   anything else, and the job is handed off (`HandedOff`): still `running`, no worker.
2. The HPC monitor (beat) follows every handed-off job with one `squeue` per cluster
   (phases `submitted` → `pending` → `running`) and, when SLURM is done with it, gives it
   back to a worker with phase `collecting`.
3. *collect*: accounting (sacct, or scontrol and the jobcomp log), the SLURM output and the
   files matching `files.collect` into the artifact store, then succeeded / failed /
   cancelled with a message saying which SLURM state ended it.

A worker that dies in turn 1 before sbatch leaves a job that is simply run again; after
sbatch, the run finds `external_id` set and resumes instead of submitting twice.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection

from submitter.hpc import limits, slurm
from submitter.hpc.accounting import AccountingLookup
from submitter.hpc.clusters import ClusterConfig, UnknownCluster, find_cluster
from submitter.hpc.environment import batch_wrapper, check_modules_argv, create_venv_argv
from submitter.hpc.finishing import EndedTasks
from submitter.hpc.pool import POOL
from submitter.hpc.staging import CONTROL_DIR, job_folder, put_upload
from submitter.hpc.transport import RemoteFile, Transport
from submitter.jobmetrics import HELPER, METRICS_FILE
from submitter.jobmetrics.service import collect_metrics
from submitter.jobs.context import HandedOff, JobCancelled, JobContext, JobFailed
from submitter.jobs.registry import JobKind, ResolvedSpec
from submitter.usercode.spec import (
    WORD,
    EnvVars,
    Files,
    Venv,
    collect_matching,
    resolve_provided,
    spec_error,
    upload_of,
    venv_reference_errors,
)
from submitter.usercode.venv import venv_path

if TYPE_CHECKING:
    from submitter.runtime import Runtime

_WORD = WORD
_MODULE = r"^[A-Za-z0-9_.+@/-]{1,128}$"
_TIME = r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$"
#: The batch wrapper's measure of the job's CPU time, in the job folder.
TIMES_FILE = f"{CONTROL_DIR}/times"
#: Lines of the SLURM output copied into the job log (all of it goes to the store).
LOG_TAIL_LINES = 200


class SlurmResources(BaseModel):
    """Become `sbatch` options; the cluster's default partition/account fill the gaps."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(default=None, pattern=_WORD)
    account: str | None = Field(default=None, pattern=_WORD)
    nodes: int | None = Field(default=None, ge=1, le=100_000)
    ntasks: int | None = Field(default=None, ge=1, le=10_000_000)
    cpus_per_task: int | None = Field(default=None, ge=1, le=100_000)
    mem: str | None = Field(default=None, pattern=r"^\d{1,12}[KMGT]?$", description="e.g. 4G")
    gpus: str | None = Field(default=None, pattern=r"^([A-Za-z0-9_-]{1,32}:)?\d{1,4}$")
    time: str | None = Field(default=None, pattern=_TIME, description="e.g. 10, 1:00:00, 1-0")


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modules: list[str] = Field(default_factory=list, max_length=100)
    venv: Venv | None = None

    @field_validator("modules")
    @classmethod
    def _check_modules(cls, value: list[str]) -> list[str]:
        for module in value:
            if not re.match(_MODULE, module):
                raise ValueError(f"{module!r} is not a module name")
        return value


class SlurmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(min_length=1, max_length=63)
    script: str | None = Field(default=None, description="Batch script text.", max_length=1 << 20)
    command: str | None = Field(
        default=None, description="A shell command, wrapped into a script.", max_length=1 << 16
    )
    name: str = Field(default="submitter", pattern=_WORD)
    resources: SlurmResources = Field(default_factory=SlurmResources)
    environment: Environment = Field(default_factory=Environment)
    files: Files = Field(default_factory=Files)
    env: EnvVars

    @model_validator(mode="after")
    def _one_of_script_or_command(self) -> SlurmSpec:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of script or command")
        return self

    def script_text(self) -> str:
        if self.script is not None:
            return self.script
        return f"#!/bin/bash\n{self.command}\n"


# --------------------------------------------------------------------------- submit time


def resolve_spec(
    clusters: list[ClusterConfig], connection: Connection, spec: dict[str, Any]
) -> ResolvedSpec:
    """At submit: the cluster must exist; the provided files resolve (`resolve_provided`)."""
    errors: list[dict[str, Any]] = []
    try:
        find_cluster(clusters, spec["cluster"])
    except UnknownCluster as error:
        errors.append(spec_error(["cluster"], str(error), "unknown_cluster", spec["cluster"]))
    resolved, dataset_ids, more = resolve_provided(connection, spec)
    return resolved, dataset_ids, errors + more


# --------------------------------------------------------------------------- on a worker

ACCOUNTING = AccountingLookup(POOL)
ENDED_TASKS = EndedTasks(POOL, ACCOUNTING)


def run(spec: SlurmSpec, ctx: JobContext) -> Any:
    cluster = find_cluster(ctx.runtime.settings.clusters, spec.cluster)
    if ctx.external_id is None:
        if ctx.resumed_phase == limits.RELEASED:  # throttled after staging: sbatch now
            folder = job_folder(POOL.get(cluster).expand(cluster.workdir), ctx.job_id)
            wrapper = f"{folder}/{CONTROL_DIR}/job.sbatch"
            if POOL.get(cluster).exists(wrapper):
                ctx.log(f"released: submitting the job prepared in {folder}")
                _submit(spec, ctx, cluster, folder, wrapper)
        _prepare_and_submit(spec, ctx, cluster)  # raises HandedOff
    return _follow_up(spec, ctx, cluster, ctx.external_id)


def _prepare_and_submit(spec: SlurmSpec, ctx: JobContext, cluster: ClusterConfig) -> NoReturn:
    ctx.progress(phase="preparing", message=f"preparing on cluster {cluster.name}")
    base = POOL.get(cluster).expand(cluster.workdir)
    venv = prepare_environment(spec, ctx, cluster, base)
    folder, wrapper = stage_job(spec, ctx, cluster, base, ctx.job_id, venv=venv)
    _submit(spec, ctx, cluster, folder, wrapper)


def prepare_environment(
    spec: SlurmSpec, ctx: JobContext, cluster: ClusterConfig, base: str
) -> str | None:
    """Check the modules and create (or reuse) the venv; the venv's path, if any."""
    modules = spec.environment.modules
    if modules:
        done = POOL.run(cluster, check_modules_argv(cluster, modules))
        if not done.ok:
            raise JobFailed(f"loading modules on {cluster.name} failed: {_tail(done.stderr)}")
        ctx.log(f"modules load: {' '.join(modules)}")
    return _ensure_venv(spec, ctx, cluster, base) if spec.environment.venv else None


def stage_job(
    spec: SlurmSpec,
    ctx: JobContext,
    cluster: ClusterConfig,
    base: str,
    job_id: str,
    *,
    venv: str | None,
    skip: frozenset[tuple[str, str]] = frozenset(),
    control: bool = True,
) -> tuple[str, str]:
    """Job `job_id`'s folder with its provided files (but those in `skip`, staged once
    elsewhere), its script and batch wrapper (not with `control=False`: an array writes
    those of all its tasks at once); return (folder, wrapper)."""
    from submitter.datasets.limits import DatasetLimits

    transport = POOL.get(cluster)
    folder = job_folder(base, job_id)
    transport.makedirs(f"{folder}/{CONTROL_DIR}")
    ctx.log(f"job folder {folder} on cluster {cluster.name}")
    limits_ = DatasetLimits.from_settings(ctx.runtime.settings)
    for item in spec.files.provide:
        if (item.source, item.target) in skip:
            continue
        ctx.check_cancelled()
        size = put_upload(transport, ctx.runtime.store, folder, upload_of(ctx, item), limits_)
        ctx.log(f"staged {item.source.split(':', 1)[0]} → {item.target} ({size} bytes)")
    ctx.check_cancelled()
    files = control_files(spec, cluster, folder, job_id, venv=venv) if control else []
    for relative, data, mode in files:
        target = f"{folder}/{relative}"
        if relative.count("/") > 1:
            transport.makedirs(target.rsplit("/", 1)[0])
        transport.put(io.BytesIO(data), target, mode=mode)
    return folder, f"{folder}/{CONTROL_DIR}/job.sbatch"


def control_files(
    spec: SlurmSpec, cluster: ClusterConfig, folder: str, job_id: str, *, venv: str | None
) -> list[tuple[str, bytes, int]]:
    """Submitter's own files of a job folder, (path in the folder, bytes, mode): the
    script, the metrics helper and the batch wrapper (an array writes all its tasks' in
    one transfer, hpc.arrays)."""
    script = f"{folder}/{CONTROL_DIR}/script"
    helper_dir = f"{folder}/{CONTROL_DIR}/lib"
    text = batch_wrapper(
        cluster,
        job_id=job_id,
        folder=folder,
        script=script,
        modules=spec.environment.modules,
        venv=venv,
        env=spec.env,
        times_file=f"{folder}/{TIMES_FILE}",
        metrics_file=f"{folder}/{CONTROL_DIR}/{METRICS_FILE}",
        helper_dir=helper_dir,
    )
    return [
        (f"{CONTROL_DIR}/script", spec.script_text().encode(), 0o700),
        (f"{CONTROL_DIR}/lib/{HELPER.name}", HELPER.read_bytes(), 0o644),
        (f"{CONTROL_DIR}/job.sbatch", text.encode(), 0o700),
    ]


def _ensure_venv(spec: SlurmSpec, ctx: JobContext, cluster: ClusterConfig, base: str) -> str:
    venv = spec.environment.venv
    assert venv is not None
    path = venv_path(
        base,
        venv.name,
        venv.packages,
        system_site_packages=venv.system_site_packages,
        python=cluster.python,
        modules=spec.environment.modules,
    )
    ctx.progress(message=f"venv {venv.name}: creating or reusing")
    argv = create_venv_argv(
        cluster,
        path,
        venv.packages,
        system_site_packages=venv.system_site_packages,
        modules=spec.environment.modules,
    )
    done = POOL.run(cluster, argv, timeout=cluster.venv_timeout)
    if "waiting:" in done.stderr:
        ctx.log(f"venv {venv.name}: waited for another job creating it")
    if not done.ok:
        raise JobFailed(f"creating venv {venv.name} on {cluster.name} failed: {_tail(done.stderr)}")
    ctx.log(f"venv {venv.name} {done.stdout.strip() or 'ready'}: {path}")
    return path


def _submit(
    spec: SlurmSpec, ctx: JobContext, cluster: ClusterConfig, folder: str, wrapper: str
) -> NoReturn:
    argv = slurm.sbatch_argv(
        wrapper, name=spec.name, folder=folder, resources=resources_of(spec, cluster)
    )
    ctx.check_cancelled()  # the last point where a cancel means "never submitted"
    with limits.slots(ctx.runtime, cluster):
        released = ctx.resumed_phase == limits.RELEASED
        if limits.room(ctx.runtime, cluster, released=released) < 1:
            throttle(ctx, limits.throttled_message(cluster))
        slurm_id = sbatch(ctx, cluster, argv)
        recorded = ctx.set_external_id(slurm_id)  # under the lock: the next count sees it
    if not recorded:
        # Cancelled between the last check and sbatch: take it back.
        POOL.run(cluster, slurm.scancel_argv([slurm_id]))
        ctx.log(f"cancelled while submitting: scancel {slurm_id}")
        raise JobCancelled()
    ctx.log(f"submitted to {cluster.name} as SLURM job {slurm_id}")
    raise HandedOff("submitted")


def resources_of(spec: SlurmSpec, cluster: ClusterConfig) -> slurm.Resources:
    """The job's sbatch resources, the cluster's default partition and account filling in."""
    return slurm.Resources(
        **{
            **spec.resources.model_dump(),
            "partition": spec.resources.partition or cluster.partition,
            "account": spec.resources.account or cluster.account,
        }
    )


def sbatch(ctx: JobContext, cluster: ClusterConfig, argv: list[str]) -> str:
    """Run sbatch once; the SLURM id. Refused for a submit limit → the job is throttled
    (it waits in Submitter), refused for anything else → it fails saying why."""
    done = POOL.run(cluster, argv, retry=False)
    if not done.ok:
        reason = limits.submit_limit_reason(done.stderr)
        if reason is not None:
            throttle(ctx, limits.throttled_message(cluster, reason))
        raise JobFailed(f"sbatch on {cluster.name} refused the job: {_tail(done.stderr)}")
    return slurm.parse_sbatch(done.stdout)


def throttle(ctx: JobContext, message: str) -> NoReturn:
    """Wait in Submitter (phase `throttled`) until the HPC monitor releases the job."""
    ctx.log(message)
    raise HandedOff(limits.THROTTLED, message=message)


def _follow_up(
    spec: SlurmSpec, ctx: JobContext, cluster: ClusterConfig, slurm_id: str
) -> dict[str, Any]:
    """The job left SLURM (or we are resuming after a lost worker): collect and conclude."""
    transport = POOL.get(cluster)
    base = transport.expand(cluster.workdir)
    folder = job_folder(base, ctx.job_id)
    # An array task: the array's ended tasks are looked up together (hpc.finishing).
    ended = ENDED_TASKS.ended(ctx.runtime, cluster, base, ctx.job_id, slurm_id)
    files: list[RemoteFile] | None = None
    accounting: slurm.Accounting | None
    if ended is not None:
        accounting, files = ended
        if accounting.cpu_seconds is None and any(f.path == TIMES_FILE for f in files):
            cpu = _wrapper_cpu_seconds(transport, folder, known=True)
            accounting = dataclasses.replace(accounting, cpu_seconds=cpu)
    else:
        cpu = _wrapper_cpu_seconds(transport, folder)
        records = ACCOUNTING.lookup(
            cluster, [slurm_id], {slurm_id: cpu} if cpu is not None else None
        )
        accounting = records.get(slurm_id)
    if accounting is None or slurm.phase_of(accounting.state) != "finished":
        still = slurm.phase_of(accounting.state) if accounting else "submitted"
        ctx.log(f"SLURM job {slurm_id} has not ended yet ({still}); following it again")
        raise HandedOff(still)
    ctx.progress(phase="collecting", message=f"SLURM {accounting.state}: collecting")
    collected = _collect(spec, ctx, transport, folder, slurm_id, files)
    metrics_file = f"{CONTROL_DIR}/{METRICS_FILE}"
    present = None if files is None else any(f.path == metrics_file for f in files)
    result = {
        "cluster": cluster.name,
        "slurm_job_id": slurm_id,
        "slurm": accounting.as_dict(),
        "collected": collected,
        "metrics": collect_metrics(ctx, transport, f"{folder}/{metrics_file}", present=present),
    }
    state, message = slurm.outcome(accounting)
    ctx.log(f"SLURM job {slurm_id} ended {accounting.state} (exit code {accounting.exit_code})")
    if state == "cancelled":
        ctx.log(message or "cancelled on the cluster", "WARNING")
        raise JobCancelled()
    if state == "failed":
        raise JobFailed(message or "failed", result)
    return result


def _wrapper_cpu_seconds(transport: Transport, folder: str, known: bool = False) -> float | None:
    """The CPU time the batch wrapper measured (`known`: the file is there, listed)."""
    times = f"{folder}/{TIMES_FILE}"
    if not known and not transport.exists(times):
        return None
    buffer = io.BytesIO()
    transport.get_into(times, buffer)
    return slurm.parse_times(buffer.getvalue().decode(errors="replace"))


def _collect(
    spec: SlurmSpec,
    ctx: JobContext,
    transport: Transport,
    folder: str,
    slurm_id: str,
    files: list[RemoteFile] | None = None,
) -> list[str]:
    """SLURM's output and the files matching `files.collect` → the job's artifacts
    (`files`: the folder's listing, when a bulk lookup made it already)."""
    logs = [f"slurm-{slurm_id}.out", f"slurm-{slurm_id}.err"]
    names = collect_matching(ctx, transport, folder, logs, spec.files.collect, files=files)
    for name, level in zip(logs, ("INFO", "WARNING"), strict=True):
        path = ctx.workdir / name
        if path.is_file() and path.stat().st_size:
            lines = path.read_text(errors="replace").splitlines()
            shown = lines[-LOG_TAIL_LINES:]
            header = f"{name}, last {len(shown)} of {len(lines)} lines:"
            ctx.log("\n".join([header, *shown]), level)
    return names


def _tail(text: str, limit: int = 1500) -> str:
    return text.strip()[-limit:] or "(no output)"


def _resolve_spec(runtime: Runtime, connection: Connection, spec: dict[str, Any]) -> ResolvedSpec:
    resolved, dataset_ids, errors = resolve_spec(runtime.settings.clusters, connection, spec)
    errors += venv_reference_errors(spec, runtime.settings.venv_direct_references)
    return resolved, dataset_ids, errors


KIND = JobKind(
    name="slurm",
    spec_model=SlurmSpec,
    run=run,
    queue="hpc",
    description="A batch job on a SLURM cluster: staged, submitted, monitored, collected.",
    resolve_spec=_resolve_spec,
)
