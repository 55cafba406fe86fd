"""Finding out how SLURM jobs ended: sacct where the cluster keeps accounting, otherwise
`scontrol show job` (jobs the controller still remembers) and then the jobcomp log.

One command per cluster for any number of jobs; whether a cluster has accounting is asked
once per process and remembered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

from submitter.hpc import slurm
from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.pool import ClusterPool
from submitter.hpc.slurm import Accounting

logger = logging.getLogger(__name__)

_NO_ACCOUNTING = re.compile(r"accounting storage is disabled|not running a supported", re.I)
_INVALID_JOB = re.compile(r"invalid job id", re.I)


class AccountingLookup:
    def __init__(self, pool: ClusterPool) -> None:
        self.pool = pool
        self._has_sacct: dict[str, bool] = {}
        self._jobcomp_log: dict[str, str | None] = {}

    def has_sacct(self, cluster: ClusterConfig) -> bool:
        if cluster.accounting != "auto":
            return cluster.accounting == "sacct"
        if cluster.name not in self._has_sacct:
            probe = self.pool.run(cluster, slurm.sacct_argv(["1"]))
            self._has_sacct[cluster.name] = probe.ok and not _NO_ACCOUNTING.search(
                probe.stderr + probe.stdout
            )
            logger.info(
                "cluster %s: accounting %s",
                cluster.name,
                "through sacct" if self._has_sacct[cluster.name] else "off; using scontrol",
            )
        return self._has_sacct[cluster.name]

    def lookup(
        self,
        cluster: ClusterConfig,
        job_ids: Collection[str],
        cpu_seconds: dict[str, float] | None = None,
    ) -> dict[str, Accounting]:
        """What SLURM still knows about these jobs (finished or not), by job id."""
        if not job_ids:
            return {}
        cpu_seconds = cpu_seconds or {}
        if self.has_sacct(cluster):
            done = self.pool.run(cluster, slurm.sacct_argv(_asked_for(job_ids))).check()
            records = {k: v for k, v in slurm.parse_sacct(done.stdout).items() if k in job_ids}
            # slurmdbd lags the controller by a moment: a job squeue calls finished may
            # still be RUNNING (or half-filled) in sacct. The controller fills the gaps.
            lagging = [j for j in job_ids if j not in records or not _complete(records[j])]
            if lagging:
                for job_id, fields in self._scontrol(cluster, lagging).items():
                    current = slurm.accounting_from_fields(
                        fields, source="scontrol", cpu_seconds=cpu_seconds.get(job_id)
                    )
                    records[job_id] = _merge(records.get(job_id), current)
            return records
        found = {
            job_id: slurm.accounting_from_fields(
                fields, source="scontrol", cpu_seconds=cpu_seconds.get(job_id)
            )
            for job_id, fields in self._scontrol(cluster, job_ids).items()
        }
        missing = [j for j in job_ids if j not in found]
        for job_id, fields in self.jobcomp_records(cluster, missing).items():
            found[job_id] = slurm.accounting_from_fields(
                fields, source="jobcomp", cpu_seconds=cpu_seconds.get(job_id)
            )
        return found

    def _scontrol(self, cluster: ClusterConfig, job_ids: Collection[str]) -> dict[str, dict]:
        only = next(iter(job_ids)) if len(job_ids) == 1 else None
        done = self.pool.run(cluster, slurm.scontrol_argv(only))
        if not done.ok:
            if _INVALID_JOB.search(done.stderr):
                return {}
            done.check()
        jobs = slurm.parse_scontrol_jobs(done.stdout)
        return {k: v for k, v in jobs.items() if k in job_ids}

    def jobcomp_records(
        self, cluster: ClusterConfig, job_ids: Collection[str]
    ) -> dict[str, dict[str, str]]:
        """Jobs the controller forgot (older than MinJobAge), from jobcomp/filetxt."""
        if not job_ids:
            return {}
        path = self._jobcomp_path(cluster)
        if path is None:
            return {}
        patterns = [arg for job_id in job_ids for arg in ("-e", f"JobId={job_id} ")]
        done = self.pool.run(cluster, ["grep", "-F", *patterns, "--", path])
        if done.returncode not in (0, 1):  # 1: no line matched
            logger.warning("cluster %s: reading %s failed: %s", cluster.name, path, done.stderr)
            return {}
        found: dict[str, dict] = {}
        for line in done.stdout.splitlines():
            fields = slurm.parse_key_values(line)
            if fields.get("JobId") in job_ids:
                found[fields["JobId"]] = fields  # the last line of a requeued job wins
        return found

    def _jobcomp_path(self, cluster: ClusterConfig) -> str | None:
        if cluster.name not in self._jobcomp_log:
            done = self.pool.run(cluster, ["scontrol", "show", "config"])
            path = None
            if done.ok:
                kinds = dict(_config_lines(done.stdout))
                if kinds.get("JobCompType") == "jobcomp/filetxt":
                    path = kinds.get("JobCompLoc")
            self._jobcomp_log[cluster.name] = path
        return self._jobcomp_log[cluster.name]


def _asked_for(job_ids: Collection[str]) -> list[str]:
    """The ids to give sacct: an array's id for several tasks of one array (`--jobs=123`
    answers for all its tasks; 500 task ids would make a long command line), else the
    ids as they are. The caller keeps the records of the ids it asked about."""
    arrays = {j.partition("_")[0] for j in job_ids if "_" in j}
    if len(job_ids) > 1 and len(arrays) == 1 and all("_" in j for j in job_ids):
        return sorted(arrays)
    return list(job_ids)


def _complete(record: Accounting) -> bool:
    return slurm.phase_of(record.state) == "finished" and record.end_time is not None


def _merge(stored: Accounting | None, current: Accounting) -> Accounting:
    """sacct's record where it knows the end, else the controller's, gaps filled either way."""
    if stored is None:
        return current
    first, second = (stored, current) if _complete(stored) else (current, stored)
    values = {
        name: getattr(first, name) if getattr(first, name) is not None else getattr(second, name)
        for name in first.__dataclass_fields__
    }
    return Accounting(**values)


def _config_lines(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs
