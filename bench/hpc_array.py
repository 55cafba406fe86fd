"""SLURM job arrays against single jobs: N tasks as one sweep (one array) and N single
slurm jobs, on the test cluster, through the whole of Submitter.

    .venv/bin/python bench/hpc_array.py [--tasks 500] [--interval 1] [--timeout 1800]

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
    args = parser.parse_args()
    try:
        return run(args.tasks, args.interval, args.timeout)
    except BenchError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


def run(count: int, interval: float, timeout: float) -> int:
    from submitter.hpc.monitor import Monitor
    from submitter.hpc.pool import ClusterPool
    from tests.conftest import make_backend, make_stack
    from tests.hpc_cluster import slurm_cluster

    log("starting the test cluster (SLURM + sshd)")
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
            for name, submit in (("array", _submit_array), ("single", _submit_singles)):
                before = _ssh_sessions(cluster)
                started = time.monotonic()
                ids = submit(stack, count)
                polls = _follow(stack, monitor, ids, interval, timeout)
                wall = time.monotonic() - started
                jobs = _jobs(stack, ids)
                figures[name] = {
                    "wall": wall,
                    "sbatch": len({(j.external_id or "").split("_")[0] for j in jobs}),
                    "squeue": [p.commands.get("squeue", 0) for p in polls],
                    "ssh": _ssh_sessions(cluster) - before,
                    "succeeded": sum(j.state == "succeeded" for j in jobs),
                }
                log(f"{name}: {figures[name]['succeeded']}/{count} succeeded in {wall:.0f}s")
            pool.close()
    _report(count, figures)
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


def _report(count: int, figures: dict[str, dict[str, Any]]) -> None:
    array, single = figures["array"], figures["single"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    def per_poll(f: dict[str, Any]) -> str:
        calls = f["squeue"]
        return f"max {max(calls, default=0)}, mean {sum(calls) / max(1, len(calls)):.2f}"

    ratio = array["wall"] / single["wall"] if single["wall"] else 0.0
    print(f"{count} tasks as one array vs {count} single slurm jobs (load average {load})")
    print(f"{'':22} {'array':>12} {'single jobs':>12}  goal")
    print(f"{'sbatch calls':22} {array['sbatch']:>12} {single['sbatch']:>12}  array: 1")
    print(f"{'squeue per poll':22} {per_poll(array):>12} {per_poll(single):>12}  1")
    print(f"{'SSH sessions accepted':22} {array['ssh']:>12} {single['ssh']:>12}")
    print(
        f"{'wall, submit→succeeded':22} {array['wall']:>11.0f}s {single['wall']:>11.0f}s"
        f"  array ≤ 0.5x single: ratio {ratio:.2f} "
        f"({'met' if ratio <= 0.5 else 'NOT MET'})"
    )


if __name__ == "__main__":
    sys.exit(main())
