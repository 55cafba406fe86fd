"""A cluster's limits: how many jobs Submitter keeps in SLURM at once (`max_jobs`), and
sbatch refusals for a submit limit. Both make a job wait in Submitter, in phase
`throttled` (still `running`, no worker), instead of failing it; the HPC monitor releases
throttled jobs, oldest first, as others end.

Every sbatch of a cluster with `max_jobs` happens under the cluster's slot lock
(submitter.locks: Redis, a PostgreSQL advisory lock or a file lock) after counting the
jobs in SLURM, so the limit holds with any number of workers; the monitor releases under
the same lock.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select

from submitter.db.models import Job
from submitter.hpc.clusters import ClusterConfig
from submitter.jobs.states import JobState
from submitter.runtime import Runtime

KIND = "slurm"
THROTTLED = "throttled"
RELEASED = "released"
#: Phases of a job that is in SLURM (submitted, queued there, or running there).
IN_SLURM = ("submitted", "pending", "running")

# sbatch prints the reason of a refusal by a submit limit on its own line
# ("sbatch: error: AssocMaxSubmitJobLimit") before "Batch job submission failed: Job
# violates accounting/QOS policy (...)". That last sentence alone is no proof: time and
# size limits give it too, and those jobs would wait forever.
_SUBMIT_LIMIT = re.compile(
    r"\b(?:Assoc|QOS)\w*Submit\w*Limit\b|\bMaxSubmitJobs?\w*\b", re.IGNORECASE
)


def submit_limit_reason(stderr: str) -> str | None:
    """The submit limit an sbatch refusal names (`AssocMaxSubmitJobLimit`, ...), or None
    when it was refused for something else."""
    match = _SUBMIT_LIMIT.search(stderr)
    return match.group(0) if match else None


@dataclass(frozen=True)
class Occupancy:
    """A cluster's jobs as Submitter counts them against `max_jobs`."""

    in_slurm: int
    released: int
    throttled: list[str]  # job ids, oldest first


def occupancy(runtime: Runtime, cluster: str) -> Occupancy:
    """Jobs of `cluster` in SLURM (array tasks one each), released, and throttled."""
    with runtime.reads() as session:
        rows = session.execute(
            select(Job.id, Job.phase, Job.spec)
            .where(
                Job.kind == KIND,
                Job.state == JobState.running,
                Job.phase.in_([*IN_SLURM, RELEASED, THROTTLED]),
            )
            .order_by(Job.created_at, Job.id)
        ).all()
    mine = [(job_id, phase) for job_id, phase, spec in rows if spec.get("cluster") == cluster]
    return Occupancy(
        in_slurm=sum(1 for _, phase in mine if phase in IN_SLURM),
        released=sum(1 for _, phase in mine if phase == RELEASED),
        throttled=[job_id for job_id, phase in mine if phase == THROTTLED],
    )


@contextlib.contextmanager
def slots(runtime: Runtime, cluster: ClusterConfig) -> Iterator[None]:
    """Hold the cluster's slot lock (nothing to hold for a cluster without `max_jobs`)."""
    if cluster.max_jobs is None:
        yield
        return
    from submitter.locks import exclusive

    with exclusive(runtime, f"hpc-slots-{cluster.name}", poll=0.1):
        yield


def room(runtime: Runtime, cluster: ClusterConfig, *, released: bool = False) -> int:
    """How many more jobs may go into SLURM now (call under `slots`).

    Jobs the monitor released are counted as if in SLURM already (their workers are on the
    way to sbatch); a job that was itself `released` is one of those. A new job finds no
    room while older ones are throttled: they go first."""
    if cluster.max_jobs is None:
        return 1_000_000
    now = occupancy(runtime, cluster.name)
    if now.throttled and not released:
        return 0
    return cluster.max_jobs - now.in_slurm - now.released + (1 if released else 0)


def to_release(runtime: Runtime, cluster: ClusterConfig, ended: int) -> list[str]:
    """Throttled jobs the monitor may release now, oldest first (call under `slots`).

    With `max_jobs`: as many as there is room for. Without (the jobs were refused by a
    submit limit only SLURM knows): as many as ended this poll, at least one, so a job
    that goes through frees the next and a refused one costs one sbatch per poll."""
    now = occupancy(runtime, cluster.name)
    if not now.throttled:
        return []
    if cluster.max_jobs is None:
        count = max(1, ended) - now.released
    else:
        count = cluster.max_jobs - now.in_slurm - now.released
    if count <= 0:
        return []
    return within_max_parallel(runtime, now.throttled)[:count]


def within_max_parallel(runtime: Runtime, throttled: list[str]) -> list[str]:
    """`throttled` (oldest first) without the sweep children their sweep's `max_parallel`
    has no room for. A throttled array task goes out as a single job, outside the array's
    `%max_parallel`: the sweep's children in SLURM (array tasks pending there too, as they
    may start at any moment) and released count against it."""
    with runtime.reads() as session:
        parents = dict(
            session.execute(
                select(Job.id, Job.parent_id).where(
                    Job.id.in_(throttled), Job.parent_id.is_not(None)
                )
            ).all()
        )
        if not parents:
            return throttled
        limited: dict[str, int] = {
            parent_id: most
            for parent_id, most in session.execute(
                select(Job.id, Job.max_parallel).where(Job.id.in_(set(parents.values())))
            ).all()
            if most is not None
        }
        busy: dict[str, int] = {}
        for parent_id in limited:
            busy[parent_id] = (
                session.scalar(
                    select(func.count()).where(
                        Job.parent_id == parent_id,
                        Job.state == JobState.running,
                        Job.phase.is_distinct_from(THROTTLED),
                    )
                )
                or 0
            )
    chosen = []
    for job_id in throttled:
        sweep = parents.get(job_id)
        if sweep is not None and sweep in limited:
            if busy[sweep] >= limited[sweep]:
                continue
            busy[sweep] += 1
        chosen.append(job_id)
    return chosen


def throttled_message(cluster: ClusterConfig, reason: str | None = None) -> str:
    if reason:
        return f"throttled: sbatch on {cluster.name} refused by a submit limit ({reason})"
    return f"throttled: {cluster.name} has max_jobs {cluster.max_jobs} jobs in SLURM"
