"""The HPC monitor: follows every handed-off SLURM job, one poll per interval, in beat.

Per cluster and poll: one `scancel` for jobs cancelled in Submitter, one `squeue` for all
jobs it follows; jobs that left squeue are confirmed with one sacct (or scontrol/jobcomp)
call before they are called finished. A finished job is handed back to a worker (phase
`collecting`) — collection moves files and must not block the monitor. All connections
come from the process's pool, so a poll reuses one SSH session per cluster.

Every change is a conditional update on (state running, no run token, the same SLURM id):
a job cancelled or taken over meanwhile is left alone.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update

from submitter.db.models import Job
from submitter.db.session import rows_changed
from submitter.db.types import utcnow
from submitter.hpc import limits, slurm
from submitter.hpc.accounting import AccountingLookup
from submitter.hpc.clusters import ClusterConfig, ClusterError
from submitter.hpc.pool import POOL, ClusterPool
from submitter.jobs.service import add_log
from submitter.jobs.states import JobState
from submitter.runtime import Runtime

logger = logging.getLogger(__name__)

FOLLOWED_PHASES = limits.IN_SLURM
KIND = "slurm"
#: A followed job: (job id, phase, message).
Followed = tuple[str, str, str | None]


@dataclass
class ClusterPoll:
    """What one poll did on one cluster (bench/hpc_monitor.py reports these)."""

    followed: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    connections_opened: int = 0
    finished: list[str] = field(default_factory=list)
    cancelled: int = 0
    released: int = 0
    error: str | None = None
    seconds: float = 0.0


@dataclass
class MonitorReport:
    clusters: dict[str, ClusterPoll] = field(default_factory=dict)


class Monitor:
    def __init__(self, runtime: Runtime, pool: ClusterPool = POOL) -> None:
        self.runtime = runtime
        self.pool = pool
        self.accounting = AccountingLookup(pool)

    def poll(self) -> MonitorReport:
        report = MonitorReport()
        clusters = {c.name: c for c in self.runtime.settings.clusters}
        if not clusters:
            return report
        followed, to_cancel = self._jobs()
        for name in sorted(set(followed) | set(to_cancel) | self._throttled_clusters()):
            cluster = clusters.get(name)
            if cluster is None:
                logger.warning("jobs name cluster %s, which is no longer configured", name)
                continue
            report.clusters[name] = self._poll_cluster(
                cluster, followed.get(name, {}), to_cancel.get(name, {})
            )
        return report

    def _throttled_clusters(self) -> set[str]:
        """Clusters with jobs waiting in Submitter for a slot (see hpc.limits)."""
        with self.runtime.reads() as session:
            specs = session.scalars(
                select(Job.spec).where(
                    Job.kind == KIND,
                    Job.state == JobState.running,
                    Job.phase == limits.THROTTLED,
                )
            )
            return {str(spec.get("cluster")) for spec in specs}

    def _jobs(self) -> tuple[dict[str, dict[str, Followed]], dict[str, dict[str, str]]]:
        """Followed jobs {cluster: {slurm id: (job id, phase, message)}}, and those to
        scancel."""
        followed: dict[str, dict[str, Followed]] = defaultdict(dict)
        to_cancel: dict[str, dict[str, str]] = defaultdict(dict)
        with self.runtime.reads() as session:
            rows = session.execute(
                select(Job.id, Job.state, Job.phase, Job.external_id, Job.spec, Job.message).where(
                    Job.kind == KIND,
                    Job.external_id.is_not(None),
                    Job.phase.in_([*FOLLOWED_PHASES, "collecting"]),
                    # Followed: released by its worker. To scancel: any cancelled job with a
                    # SLURM id, even one cancelled in the instant between sbatch and release.
                    or_(
                        (Job.state == JobState.running) & Job.run_token.is_(None),
                        Job.state == JobState.cancelled,
                    ),
                )
            ).all()
        for job_id, state, phase, external_id, spec, message in rows:
            cluster = str(spec.get("cluster"))
            if state == JobState.cancelled:
                to_cancel[cluster][external_id] = job_id
            elif phase in FOLLOWED_PHASES:
                followed[cluster][external_id] = (job_id, phase, message)
        return followed, to_cancel

    def _poll_cluster(
        self,
        cluster: ClusterConfig,
        followed: dict[str, Followed],
        to_cancel: dict[str, str],
    ) -> ClusterPoll:
        started = time.monotonic()
        commands_before = {k: v for k, v in self.pool.commands.items() if k[0] == cluster.name}
        connections_before = self.pool.connections_opened[cluster.name]
        result = ClusterPoll(followed=len(followed))
        try:
            if to_cancel:
                self._scancel(cluster, to_cancel)
                result.cancelled = len(to_cancel)
            if followed:
                result.finished = self._follow(cluster, followed)
            result.released = self._release(cluster, len(result.finished))
        except ClusterError as error:
            result.error = str(error)
            logger.warning("monitoring cluster %s failed: %s", cluster.name, error)
        result.commands = {
            program: count - commands_before.get((name, program), 0)
            for (name, program), count in self.pool.commands.items()
            if name == cluster.name and count - commands_before.get((name, program), 0)
        }
        result.connections_opened = self.pool.connections_opened[cluster.name] - connections_before
        result.seconds = time.monotonic() - started
        return result

    def _scancel(self, cluster: ClusterConfig, to_cancel: dict[str, str]) -> None:
        """One scancel for all. The tasks of an array whose sweep was cancelled go as the
        array's id (`scancel 123` ends every task, pending ones included, in one request
        to the controller); a child cancelled on its own stays `123_4`."""
        whole = self._cancelled_arrays(to_cancel)
        targets = {s: a if (a := s.partition("_")[0]) in whole else s for s in to_cancel}
        done = self.pool.run(cluster, slurm.scancel_argv(sorted(set(targets.values()))))
        if not done.ok:  # jobs that already ended make scancel complain; that is fine
            logger.info("scancel on %s: %s", cluster.name, done.stderr.strip())
        with self.runtime.transaction() as session:
            for slurm_id, job_id in to_cancel.items():
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state == JobState.cancelled,
                        Job.external_id == slurm_id,
                    )
                    .values(phase=None)
                )
                target = targets[slurm_id]
                add_log(
                    session,
                    job_id,
                    f"scancel {target} on {cluster.name}"
                    + (
                        f" (the whole array, with its sweep; task {slurm_id})"
                        if target != slurm_id
                        else ""
                    ),
                )

    def _cancelled_arrays(self, to_cancel: dict[str, str]) -> set[str]:
        """The ids of arrays among `to_cancel`'s tasks whose sweep (the job
        that ran `sbatch --array`, its external id the array's) is cancelled."""
        arrays = {s.partition("_")[0] for s in to_cancel if "_" in s}
        if not arrays:
            return set()
        with self.runtime.reads() as session:
            found = session.scalars(
                select(Job.external_id).where(
                    Job.id.in_(
                        select(Job.parent_id).where(
                            Job.id.in_(list(to_cancel.values())), Job.parent_id.is_not(None)
                        )
                    ),
                    Job.state == JobState.cancelled,
                    Job.external_id.in_(sorted(arrays)),
                )
            )
            return {a for a in found if a}

    def _follow(self, cluster: ClusterConfig, followed: dict[str, Followed]) -> list[str]:
        done = self.pool.run(cluster, slurm.squeue_argv(sorted(followed, key=int)))
        if not done.ok and "invalid job id" not in done.stderr.lower():
            done.check()  # squeue is down: change nothing, try again next poll
        states = slurm.parse_squeue(done.stdout) if done.ok else {}
        phases: dict[str, tuple[str, str | None]] = {}
        finished: dict[str, str] = {}
        vanished = [slurm_id for slurm_id in followed if slurm_id not in states]
        for slurm_id, (state, reason) in states.items():
            if slurm_id not in followed:
                continue
            phase = slurm.phase_of(state)
            if phase == "finished":
                finished[slurm_id] = slurm.base_state(state)
            elif phase == "pending":
                phases[slurm_id] = (phase, slurm.pending_message(reason))
            else:
                phases[slurm_id] = (phase, None)
        if vanished:
            # Gone from squeue: only a record of its end (sacct, scontrol, jobcomp) says it
            # finished; without one it stays followed (squeue may have answered partially).
            known = self.accounting.lookup(cluster, vanished)
            for slurm_id in vanished:
                record = known.get(slurm_id)
                if record is not None and slurm.phase_of(record.state) == "finished":
                    finished[slurm_id] = record.state
                elif record is None:
                    logger.warning(
                        "SLURM job %s on %s left squeue and has no record yet",
                        slurm_id,
                        cluster.name,
                    )
        self._record(followed, phases, finished)
        return sorted(finished.values())

    def _record(
        self,
        followed: dict[str, Followed],
        phases: dict[str, tuple[str, str | None]],
        finished: dict[str, str],
    ) -> None:
        changed = {
            s: (phase, message)
            for s, (phase, message) in phases.items()
            if followed[s][1] != phase or (message is not None and followed[s][2] != message)
        }
        if not changed and not finished:
            return
        now = utcnow()
        # A worker must pick a finished job up within this; else the reconciler re-sends it.
        lease = now + timedelta(seconds=self.runtime.settings.requeue_after_seconds)
        handed_back: list[tuple[str, str]] = []
        with self.runtime.transaction() as session:
            for slurm_id, (phase, message) in changed.items():
                job_id = followed[slurm_id][0]
                if phase == "running":
                    message = f"running in SLURM as job {slurm_id}"
                values = (
                    {"phase": phase} if message is None else {"phase": phase, "message": message}
                )
                session.execute(self._still_followed(job_id, slurm_id).values(**values))
                if phase == "running":
                    add_log(session, job_id, f"SLURM job {slurm_id} is running")
                elif message is not None and followed[slurm_id][2] != message:
                    add_log(session, job_id, f"SLURM job {slurm_id}: {message}")
            for slurm_id, state in finished.items():
                job_id = followed[slurm_id][0]
                moved = rows_changed(
                    session,
                    self._still_followed(job_id, slurm_id).values(
                        phase="collecting",
                        message=f"SLURM job {slurm_id} ended {state}; collecting",
                        lease_expires_at=lease,
                    ),
                )
                if moved:
                    add_log(session, job_id, f"SLURM job {slurm_id} ended {state}")
                    handed_back.append((job_id, "hpc"))
        self._hand_back(handed_back)

    def _release(self, cluster: ClusterConfig, ended: int) -> int:
        """Give throttled jobs of this cluster back to workers (to sbatch), oldest first,
        as far as `max_jobs` leaves room; a conditional update per job, under the
        cluster's slot lock, so two monitors never release one slot twice."""
        if not limits.occupancy(self.runtime, cluster.name).throttled:
            return 0
        now = utcnow()
        lease = now + timedelta(seconds=self.runtime.settings.requeue_after_seconds)
        released: list[str] = []
        with limits.slots(self.runtime, cluster):
            chosen = limits.to_release(self.runtime, cluster, ended)
            if not chosen:
                return 0
            with self.runtime.transaction() as session:
                for job_id in chosen:
                    moved = rows_changed(
                        session,
                        update(Job)
                        .where(
                            Job.id == job_id,
                            Job.state == JobState.running,
                            Job.run_token.is_(None),
                            Job.phase == limits.THROTTLED,
                        )
                        .values(
                            phase=limits.RELEASED,
                            message=f"released: submitting to {cluster.name}",
                            lease_expires_at=lease,
                        ),
                    )
                    if moved:
                        add_log(session, job_id, f"released: a slot on {cluster.name} is free")
                        released.append(job_id)
        self._hand_back([(job_id, "hpc") for job_id in released])
        return len(released)

    def _hand_back(self, jobs: list[tuple[str, str]]) -> None:
        from submitter.worker.dispatch import send_job

        for job_id, queue in jobs:
            try:
                send_job(self.runtime.celery, job_id, queue)
            except Exception as error:  # the reconciler re-sends when the lease expires
                logger.warning("could not hand job %s back to a worker: %s", job_id, error)

    @staticmethod
    def _still_followed(job_id: str, slurm_id: str):  # type: ignore[no-untyped-def]
        return update(Job).where(
            Job.id == job_id,
            Job.state == JobState.running,
            Job.run_token.is_(None),
            Job.external_id == slurm_id,
            Job.phase.in_(FOLLOWED_PHASES),
        )


_MONITORS: dict[int, Monitor] = {}


def poll_clusters(runtime: Runtime) -> MonitorReport:
    """The beat entry: one poll of every cluster with followed or cancelled jobs."""
    monitor = _MONITORS.get(id(runtime))
    if monitor is None:
        monitor = _MONITORS[id(runtime)] = Monitor(runtime)
    report = monitor.poll()
    for name, poll in report.clusters.items():
        if poll.finished or poll.error:
            logger.info(
                "hpc monitor %s: %d followed, %d finished, commands %s, %.2fs%s",
                name,
                poll.followed,
                len(poll.finished),
                poll.commands,
                poll.seconds,
                f", error: {poll.error}" if poll.error else "",
            )
    return report
