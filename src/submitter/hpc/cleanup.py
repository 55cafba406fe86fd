"""Removing job folders from the clusters once their jobs have ended (beat, `hpc_cleanup`).

When a job has ended, its outputs and SLURM logs are in the artifact store, and its folder
on the cluster's scratch space only uses quota. Each cluster's `keep_job_folders` says
what stays: `failed` (the default) keeps the folders of jobs that did not succeed, for
debugging; `never` keeps none; `always` keeps all.

This runs in beat, after the job's end (with its artifacts) is committed, never in the
worker that collects: a worker that died between removing the folder and saving the
artifacts would lose the outputs. It keeps no state: each round lists
`<workdir>/submitter/` on the cluster (one command) and removes, in one `rm` per 200
folders, those of ended jobs of this cluster. So folders of jobs cancelled by a user and of
jobs whose worker was lost go too, and a folder the database does not know is left alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from sqlalchemy import select

from submitter.db.models import Job
from submitter.hpc.clusters import ClusterConfig, ClusterError
from submitter.hpc.pool import POOL, ClusterPool
from submitter.hpc.staging import job_folder, jobs_root
from submitter.jobs.states import TERMINAL, JobState
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

KIND = "slurm"
#: Job folders are named by job id; anything else there (`venvs/`) is not ours to remove.
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RM_BATCH = 200


@dataclass
class CleanupReport:
    removed: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def clean_up(runtime: Runtime, pool: ClusterPool = POOL) -> CleanupReport:
    """One round over every cluster whose `keep_job_folders` is not `always`."""
    report = CleanupReport()
    for cluster in runtime.settings.clusters:
        if cluster.keep_job_folders == "always":
            continue
        try:
            removed = _clean_cluster(runtime, pool, cluster)
        except ClusterError as error:
            report.errors[cluster.name] = str(error)
            logger.warning("cleaning up cluster %s failed: %s", cluster.name, error)
            continue
        if removed:
            report.removed[cluster.name] = removed
            logger.info("removed %d job folder(s) on cluster %s", len(removed), cluster.name)
    return report


def _clean_cluster(runtime: Runtime, pool: ClusterPool, cluster: ClusterConfig) -> list[str]:
    base = pool.get(cluster).expand(cluster.workdir)
    root = jobs_root(base)
    listed = pool.run(
        cluster,
        ["find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-printf", "%f\\n"],
    )
    if not listed.ok:  # no job has run there yet
        return []
    names = [n for n in listed.stdout.split() if JOB_ID.match(n)]
    removable = _removable(runtime, cluster, names) if names else []
    for start in range(0, len(removable), RM_BATCH):
        chunk = removable[start : start + RM_BATCH]
        pool.run(cluster, ["rm", "-rf", "--", *(job_folder(base, i) for i in chunk)]).check()
    return removable


def _removable(runtime: Runtime, cluster: ClusterConfig, job_ids: list[str]) -> list[str]:
    """The ended jobs of this cluster (several cluster entries may share one workdir) whose
    folder the policy does not keep."""
    with runtime.reads() as session:
        rows = session.execute(
            select(Job.id, Job.state, Job.spec).where(Job.id.in_(job_ids), Job.kind == KIND)
        ).all()
    keep_unsuccessful = cluster.keep_job_folders == "failed"
    return sorted(
        job_id
        for job_id, state, spec in rows
        if spec.get("cluster") == cluster.name
        and state in TERMINAL
        and not (keep_unsuccessful and state != JobState.succeeded)
    )
