"""A sweep of `slurm` jobs as one SLURM job array: one `sbatch --array=0-N%max_parallel`.

Each child keeps its own job folder (`<workdir>/submitter/<child id>`, its script, batch
wrapper and files) exactly as a single slurm job has (written for all tasks in one
transfer: one tar unpacked by one remote command), so the monitor, accounting and
collection treat a task like any job: its SLURM id is `ARRAY_TASK` (`123_4`), squeue lists
it on its own line (`--array`), `sacct -j 123_4` gives its accounting, `scancel 123_4`
cancels it. What differs is the submit:

- the environment (modules, venv) is prepared once, and a provided file that every child
  has alike (same source, same target) is staged once into the sweep's folder and linked
  into each task's folder when the task starts;
- one dispatcher script is the array's batch script: task i changes into the i-th child's
  folder, sends its output to that folder's `slurm-ARRAY_TASK.out/.err` and runs the
  child's wrapper.

An array counts as many jobs as it has tasks against the cluster's `max_jobs`: when there
is room for only some, the array holds the first ones and the others wait `throttled`,
released later by the monitor as single jobs (their folders are staged already).
Children that differ in cluster, name, resources or environment are not an array: they
run as single jobs, released within `max_parallel` like any sweep's.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from typing import Any

from sqlalchemy import select, update

from submitter.db.models import Job
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.hpc import limits, slurm
from submitter.hpc.clusters import ClusterConfig, find_cluster
from submitter.hpc.pool import POOL
from submitter.hpc.staging import CONTROL_DIR, job_folder, jobs_root, put_upload
from submitter.jobs.context import HandedOff, JobCancelled, JobContext, JobFailed
from submitter.jobs.states import JobState
from submitter.sweeps.service import HELD


def submit_array(ctx: JobContext) -> bool:
    """Submit the sweep `ctx.job_id`'s held children as one array; False if they cannot be
    one (the caller then releases them as single jobs)."""
    from submitter.jobs.slurm import SlurmSpec

    with ctx.runtime.reads() as session:
        rows = session.execute(
            select(Job.id, Job.spec)
            .where(Job.parent_id == ctx.job_id, Job.state == JobState.queued, Job.phase == HELD)
            .order_by(Job.sweep_index)
        ).all()
        max_parallel = session.scalar(select(Job.max_parallel).where(Job.id == ctx.job_id))
    if not rows:
        return True  # resumed after a lost worker: the array went out already
    children = [(row.id, SlurmSpec.model_validate(row.spec)) for row in rows]
    first = children[0][1]
    alike = ("cluster", "name", "resources", "environment")
    if any(getattr(s, f) != getattr(first, f) for _, s in children for f in alike):
        ctx.log("the children differ in cluster, name, resources or environment: no array")
        return False
    cluster = find_cluster(ctx.runtime.settings.clusters, first.cluster)
    from submitter.jobs.slurm import prepare_environment, resources_of, sbatch

    ctx.progress(phase="preparing", message=f"preparing {len(children)} tasks on {cluster.name}")
    transport = POOL.get(cluster)
    base = transport.expand(cluster.workdir)
    root = job_folder(base, ctx.job_id)
    shared = _shared_files([spec for _, spec in children])
    _stage_shared(ctx, cluster, root, first, shared)
    venv = prepare_environment(first, ctx, cluster, base)
    folders = _stage_tasks(ctx, cluster, base, children, venv, shared)
    ctx.check_cancelled()
    with limits.slots(ctx.runtime, cluster):
        count = min(len(children), limits.room(ctx.runtime, cluster))
        if count:
            dispatcher = f"{root}/{CONTROL_DIR}/array.sbatch"
            text = dispatcher_script(folders[:count], root, sorted(t for _, t in shared))
            transport.put(io.BytesIO(text.encode()), dispatcher, mode=0o700)
            spread = f"0-{count - 1}" + (f"%{max_parallel}" if max_parallel else "")
            argv = slurm.sbatch_argv(
                dispatcher,
                name=first.name,
                folder=root,
                resources=resources_of(first, cluster),
                array=spread,
            )
            try:
                array_id = sbatch(ctx, cluster, argv)
            except HandedOff as refused:  # a submit limit: every task waits, throttled
                ctx.log(refused.message or "sbatch refused by a submit limit")
                count = 0
            else:
                ctx.set_external_id(array_id)
                taken = _record_tasks(ctx, array_id, [c for c, _ in children[:count]])
                ctx.log(f"submitted {count} tasks to {cluster.name} as SLURM array {array_id}")
        throttled = [c for c, _ in children[count:]]
        if throttled:
            _throttle(ctx, cluster, throttled)
    if count and len(taken) < count:  # cancelled while submitting: take those tasks back
        gone = [f"{array_id}_{i}" for i, c in enumerate(children[:count]) if c[0] not in taken]
        POOL.run(cluster, slurm.scancel_argv(gone))
        ctx.log(f"scancel {' '.join(gone)}: cancelled while submitting")
    if ctx.cancelled.is_set():
        raise JobCancelled()
    return True


def _stage_tasks(
    ctx: JobContext,
    cluster: ClusterConfig,
    base: str,
    children: list[tuple[str, Any]],
    venv: str | None,
    shared: frozenset[tuple[str, str]],
) -> list[str]:
    """Every task's folder, as a single job's: the control files (script, metrics helper,
    batch wrapper) of all tasks in one gzipped tar, unpacked by one remote `tar` (500
    tasks' files one by one over SFTP are ~15,000 round trips); provided files a child has
    on its own, child by child. The folders, in the children's order."""
    from submitter.jobs.slurm import control_files, stage_job

    folders = [job_folder(base, child_id) for child_id, _ in children]
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for (child_id, spec), folder in zip(children, folders, strict=True):
            for relative, data, mode in control_files(spec, cluster, folder, child_id, venv=venv):
                info = tarfile.TarInfo(f"{child_id}/{relative}")
                info.size, info.mode, info.mtime = len(data), mode, now
                tar.addfile(info, io.BytesIO(data))
    root = jobs_root(base)
    POOL.get(cluster).makedirs(root)
    archive = buffer.getvalue()
    done = POOL.run(
        cluster, ["tar", "-x", "-z", "-f", "-", "--no-same-owner", "-C", root], stdin=archive
    )
    if not done.ok:
        raise JobFailed(
            f"writing the tasks' folders on {cluster.name} failed: {done.stderr[-1500:]}"
        )
    ctx.log(
        f"wrote {len(children)} task folders under {root} in one transfer ({len(archive)} bytes)"
    )
    for child_id, spec in children:
        if any((i.source, i.target) not in shared for i in spec.files.provide):
            ctx.check_cancelled()
            stage_job(spec, ctx, cluster, base, child_id, venv=venv, skip=shared, control=False)
    return folders


def _shared_files(specs: list[Any]) -> frozenset[tuple[str, str]]:
    """(source, target) of provided files every child has alike (staged once)."""
    if len(specs) < 2:
        return frozenset()
    sets = [{(i.source, i.target) for i in s.files.provide} for s in specs]
    return frozenset(set.intersection(*sets))


def _stage_shared(
    ctx: JobContext, cluster: ClusterConfig, root: str, spec: Any, shared: frozenset
) -> None:
    from submitter.datasets.limits import DatasetLimits
    from submitter.jobs.slurm import upload_of

    transport = POOL.get(cluster)
    transport.makedirs(f"{root}/{CONTROL_DIR}")
    limits_ = DatasetLimits.from_settings(ctx.runtime.settings)
    for item in spec.files.provide:
        if (item.source, item.target) in shared:
            size = put_upload(
                transport, ctx.runtime.store, f"{root}/shared", upload_of(ctx, item), limits_
            )
            ctx.log(f"staged once for all tasks: {item.target} ({size} bytes)")


def dispatcher_script(folders: list[str], root: str, shared_targets: list[str]) -> str:
    """The array's batch script: task i runs the i-th child's wrapper in its folder."""
    lines = [
        "#!/bin/bash",
        "# Written by Submitter: one task per child job of a sweep.",
        "folders=(" + " ".join(shlex.quote(f) for f in folders) + ")",
        'folder="${folders[$SLURM_ARRAY_TASK_ID]}"',
        'cd "$folder" || exit 2',
        'exec >"slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.out" '
        '2>"slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.err"',
    ]
    for target in shared_targets:
        source = shlex.quote(f"{root}/shared/{target}")
        parent = target.rsplit("/", 1)[0] if "/" in target else "."
        lines.append(f"mkdir -p {shlex.quote(parent)} && ln -sfn {source} {shlex.quote(target)}")
    lines += [f'exec "$folder/{CONTROL_DIR}/job.sbatch"', ""]
    return "\n".join(lines)


def _record_tasks(ctx: JobContext, array_id: str, child_ids: list[str]) -> set[str]:
    """Each child becomes its task: running, in SLURM as `ARRAY_TASK`, followed by the
    monitor (no worker). Children cancelled meanwhile are left out (and scancelled)."""
    from submitter.jobs.service import add_log

    now = utcnow()
    taken = set()
    with ctx.runtime.transaction() as session:
        for index, child_id in enumerate(child_ids):
            task = f"{array_id}_{index}"
            changed = rows_changed(
                session,
                update(Job)
                .where(Job.id == child_id, Job.state == JobState.queued, Job.phase == HELD)
                .values(
                    state=JobState.running,
                    phase="submitted",
                    external_id=task,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    run_token=None,
                    lease_expires_at=None,
                    message=f"submitted as SLURM array task {task}",
                ),
            )
            if changed:
                taken.add(child_id)
                add_log(session, child_id, f"submitted as task {task} of SLURM array {array_id}")
    return taken


def _throttle(ctx: JobContext, cluster: ClusterConfig, child_ids: list[str]) -> None:
    """Children the array has no room for wait as single jobs, staged, `throttled`."""
    from submitter.jobs.service import add_log

    text = limits.throttled_message(cluster)
    with ctx.runtime.transaction() as session:
        for child_id in child_ids:
            changed = rows_changed(
                session,
                update(Job)
                .where(Job.id == child_id, Job.state == JobState.queued, Job.phase == HELD)
                .values(
                    state=JobState.running,
                    phase=limits.THROTTLED,
                    attempts=Job.attempts + 1,
                    started_at=utcnow(),
                    run_token=None,
                    lease_expires_at=None,
                    message=text,
                ),
            )
            if changed:
                add_log(session, child_id, f"{text}; staged, waiting for a slot")
    ctx.log(f"{len(child_ids)} task(s) wait throttled ({text})")
