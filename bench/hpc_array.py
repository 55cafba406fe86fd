"""SLURM job arrays against single jobs: N tasks as one sweep (one array) and N single
slurm jobs, on the test cluster, through the whole of Submitter.

    .venv/bin/python bench/hpc_array.py [--tasks 500] [--cpus 64] [--interval 1]
                                        [--timeout 1800] [--only array|single]

Starts the test cluster of the test suite (tests/hpc_cluster.py: single-node SLURM + a
private sshd), a PostgreSQL + Redis + S3 backend, the API (in-process) and a worker
(`--concurrency=2`); the monitor runs *in this process* (what beat runs every interval),
so its squeue calls per poll are counted exactly. Then, one after the other on the same
stack: a `sweep` of `--tasks` `slurm` children (`echo`), and `--tasks` single `slurm`
jobs (`echo`). For each it prints: sbatch calls (distinct SLURM job ids the jobs ran
under: one per sbatch), squeue calls per poll, SSH sessions the cluster's sshd accepted
(monitor and worker processes), and the wall time from the first submit to the last job
`succeeded`. Goals: 1 sbatch for the array, 1 squeue per poll, array wall ≤ 0.5x the
single jobs'. The load average is printed with the figures (a shared machine).

`--cpus N` declares N CPUs on the test node (SlurmdParameters=config_overrides; the tasks
only `echo`): with the machine's 2, SLURM runs 2 jobs at once, array or not, and its own
start/end of each job bounds both walls alike. Next to the walls it prints where the time
went: SLURM's span (first task start to last task end, from the jobs' accounting) and
Submitter's lag after SLURM (a job's SLURM end to its `succeeded`, median and max), and
the remote commands the workers ran (sshd's "Starting session: command" lines, less the
monitor's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BenchError, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--interval", type=float, default=1.0, help="monitor poll interval")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--cpus", type=int, default=0, help="CPUs the test node declares (0: the machine's)"
    )
    parser.add_argument("--only", choices=("array", "single"), help="run one side only")
    args = parser.parse_args()
    if args.cpus:
        from tests.hpc_cluster import CPUS_ENV

        os.environ[CPUS_ENV] = str(args.cpus)
    try:
        return run(args.tasks, args.interval, args.timeout, args.only)
    except BenchError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


def run(count: int, interval: float, timeout: float, only: str | None = None) -> int:
    from submitter.db.types import utcnow
    from submitter.hpc.monitor import Monitor
    from submitter.hpc.pool import ClusterPool
    from tests.conftest import make_backend, make_stack
    from tests.hpc_cluster import slurm_cluster

    log("starting the test cluster (SLURM + sshd)")
    load_before = os.getloadavg()[0]
    cluster = slurm_cluster()
    with (
        tempfile.TemporaryDirectory(prefix="submitter-bench-array-") as home,
        make_backend("postgres-redis", Path(home)) as backend,
    ):
        backend.env["SUBMITTER_CLUSTERS"] = json.dumps([cluster.config("bench")])
        with make_stack(backend, beat=False) as stack:
            pool = ClusterPool()
            monitor = Monitor(stack.runtime, pool)
            figures = {}
            # One job first, not measured: the worker's start, its SSH session and the
            # accounting probe would otherwise count against whichever side runs first.
            log("warming up: one slurm job")
            _follow(stack, monitor, _submit_singles(stack, 1), interval, timeout)
            sides = (("array", _submit_array), ("single", _submit_singles))
            for name, submit in [side for side in sides if only in (None, side[0])]:
                before = _ssh_sessions(cluster)
                commands_before = _ssh_commands(cluster)
                started = time.monotonic()
                submitted_at = utcnow()
                ids = submit(stack, count)
                polls = _follow(stack, monitor, ids, interval, timeout)
                wall = time.monotonic() - started
                jobs = _jobs(stack, ids)
                monitor_commands = sum(sum(p.commands.values()) for p in polls)
                figures[name] = {
                    "wall": wall,
                    "sbatch": len({(j.external_id or "").split("_")[0] for j in jobs}),
                    "squeue": [p.commands.get("squeue", 0) for p in polls],
                    "ssh": _ssh_sessions(cluster) - before,
                    "worker_commands": _ssh_commands(cluster) - commands_before - monitor_commands,
                    "succeeded": sum(j.state == "succeeded" for j in jobs),
                    **_spans(jobs),
                    "in_slurm": _in_slurm(stack, ids, submitted_at),
                    "turn": _collect_turn(stack, jobs),
                }
                log(f"{name}: {figures[name]['succeeded']}/{count} succeeded in {wall:.0f}s")
            pool.close()
    _report(count, figures, load_before, cluster.cpus)
    return 0 if all(f["succeeded"] == count for f in figures.values()) else 1


def _submit_array(stack: Any, count: int) -> list[str]:
    response = stack.api.post(
        "/api/v1/jobs",
        json={
            "kind": "sweep",
            "spec": {
                "kind": "slurm",
                "spec": {"cluster": "bench", "command": "echo task {{i}}"},
                "matrix": {"i": list(range(count))},
            },
        },
        headers=stack.headers("user"),
    )
    if response.status_code != 202:
        raise BenchError(f"submit failed: {response.status_code} {response.text}")
    parent = response.json()["id"]
    from sqlalchemy import select

    from submitter.db.models import Job

    with stack.runtime.reads() as session:
        return list(session.scalars(select(Job.id).where(Job.parent_id == parent)))


def _submit_singles(stack: Any, count: int) -> list[str]:
    ids = []
    for index in range(count):
        response = stack.api.post(
            "/api/v1/jobs",
            json={"kind": "slurm", "spec": {"cluster": "bench", "command": f"echo job {index}"}},
            headers=stack.headers("user"),
        )
        if response.status_code != 202:
            raise BenchError(f"submit failed: {response.status_code} {response.text}")
        ids.append(response.json()["id"])
    return ids


def _jobs(stack: Any, ids: list[str]) -> list[Any]:
    from sqlalchemy import select

    from submitter.db.models import Job

    with stack.runtime.reads() as session:
        return list(session.scalars(select(Job).where(Job.id.in_(ids))))


def _follow(stack: Any, monitor: Any, ids: list[str], interval: float, timeout: float) -> list:
    """Poll like beat does, until every job ended."""
    polls = []
    deadline = time.monotonic() + timeout
    while True:
        poll = monitor.poll().clusters.get("bench")
        if poll is not None and poll.followed:
            polls.append(poll)
        jobs = _jobs(stack, ids)
        done = sum(j.state in ("succeeded", "failed", "cancelled") for j in jobs)
        if len(jobs) == len(ids) and done == len(ids):
            return polls
        if time.monotonic() > deadline:
            raise BenchError(f"timed out: {done}/{len(ids)} jobs ended")
        time.sleep(interval)


def _ssh_sessions(cluster: Any) -> int:
    """Sessions the test sshd accepted so far (it logs each at LogLevel VERBOSE)."""
    log_file = Path(cluster.tmpdir) / "sshd.log"
    return log_file.read_text(errors="replace").count("Accepted publickey")


def _ssh_commands(cluster: Any) -> int:
    """Remote commands (exec channels) the test sshd started so far, all connections."""
    log_file = Path(cluster.tmpdir) / "sshd.log"
    return log_file.read_text(errors="replace").count("Starting session: command")


def _in_slurm(stack: Any, ids: list[str], since: Any) -> float:
    """Seconds from the first submit to the last job (task) in SLURM: staging + sbatch."""
    from sqlalchemy import func, select

    from submitter.db.models import JobLog

    with stack.runtime.reads() as session:
        last = session.scalar(
            select(func.max(JobLog.at)).where(
                JobLog.job_id.in_(ids), JobLog.message.like("submitted %")
            )
        )
    return (last - since).total_seconds() if last else 0.0


def _collect_turn(stack: Any, jobs: list[Any]) -> float:
    """Median seconds of a job's collecting turn on a worker: its last `resumed on`
    (the claim) to its `finished_at`."""
    from sqlalchemy import func, select

    from submitter.db.models import JobLog

    with stack.runtime.reads() as session:
        resumed = dict(
            session.execute(
                select(JobLog.job_id, func.max(JobLog.at))
                .where(JobLog.job_id.in_([j.id for j in jobs]), JobLog.message.like("resumed on %"))
                .group_by(JobLog.job_id)
            ).all()
        )
    turns = sorted(
        (j.finished_at - resumed[j.id]).total_seconds()
        for j in jobs
        if j.finished_at and j.id in resumed
    )
    return turns[len(turns) // 2] if turns else 0.0


def _spans(jobs: list[Any]) -> dict[str, float]:
    """SLURM's span (first start to last end, from each job's accounting) and Submitter's
    lag after it (a job's SLURM end to its `succeeded`): which of the two the wall is."""
    from datetime import datetime, timedelta

    starts, ends, lags = [], [], []
    for job in jobs:
        record = (job.result or {}).get("slurm") or {}
        if not record.get("end_time") or record.get("elapsed_seconds") is None:
            continue
        end = datetime.fromisoformat(record["end_time"]).astimezone()  # cluster-local time
        ends.append(end)
        starts.append(end - timedelta(seconds=record["elapsed_seconds"]))
        if job.finished_at is not None:
            lags.append((job.finished_at - end).total_seconds())
    lags.sort()
    return {
        "slurm_span": (max(ends) - min(starts)).total_seconds() if ends else 0.0,
        "lag_median": lags[len(lags) // 2] if lags else 0.0,
        "lag_max": lags[-1] if lags else 0.0,
    }


def _report(count: int, figures: dict[str, dict[str, Any]], load_before: float, cpus: int) -> None:
    empty = {
        "wall": 0.0,
        "sbatch": 0,
        "squeue": [],
        "ssh": 0,
        "worker_commands": 0,
        "in_slurm": 0.0,
        "turn": 0.0,
    }
    array = figures.get("array", {**empty, "slurm_span": 0.0, "lag_median": 0.0, "lag_max": 0.0})
    single = figures.get("single", {**empty, "slurm_span": 0.0, "lag_median": 0.0, "lag_max": 0.0})
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    def per_poll(f: dict[str, Any]) -> str:
        calls = f["squeue"]
        return f"max {max(calls, default=0)}, mean {sum(calls) / max(1, len(calls)):.2f}"

    ratio = array["wall"] / single["wall"] if single["wall"] else 0.0
    print(
        f"{count} tasks as one array vs {count} single slurm jobs, node with {cpus} CPUs "
        f"(1-min load average {load_before:.2f} before; {load} after)"
    )
    print(f"{'':22} {'array':>12} {'single jobs':>12}  goal")
    print(f"{'sbatch calls':22} {array['sbatch']:>12} {single['sbatch']:>12}  array: 1")
    print(f"{'squeue per poll':22} {per_poll(array):>12} {per_poll(single):>12}  1")
    print(f"{'SSH sessions accepted':22} {array['ssh']:>12} {single['ssh']:>12}")
    print(
        f"{'worker remote commands':22} {array['worker_commands']:>12} "
        f"{single['worker_commands']:>12}"
    )
    print(
        f"{'submit→all in SLURM':22} {array['in_slurm']:>11.0f}s {single['in_slurm']:>11.0f}s"
        "  staging + sbatch"
    )
    print(f"{'SLURM span':22} {array['slurm_span']:>11.0f}s {single['slurm_span']:>11.0f}s")
    print(
        f"{'SLURM end→succeeded':22} {array['lag_median']:>5.1f}/{array['lag_max']:>5.0f}s "
        f"{single['lag_median']:>5.1f}/{single['lag_max']:>5.0f}s  median/max"
    )
    print(
        f"{'collect turn (median)':22} {array['turn']:>11.2f}s {single['turn']:>11.2f}s"
        "  claim to finished, on a worker"
    )
    print(
        f"{'wall, submit→succeeded':22} {array['wall']:>11.0f}s {single['wall']:>11.0f}s"
        f"  array ≤ 0.5x single: ratio {ratio:.2f} "
        f"({'met' if ratio <= 0.5 else 'NOT MET'})"
    )


if __name__ == "__main__":
    sys.exit(main())
