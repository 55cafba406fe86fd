"""HPC monitoring cost and latency: many short SLURM jobs followed by Submitter's monitor.

    .venv/bin/python bench/hpc_monitor.py [--jobs 200] [--interval 1] [--timeout 900]

Starts the test cluster of the test suite (tests/hpc_cluster.py: single-node SLURM + a
private sshd), a PostgreSQL + Redis + S3 backend, the API (in-process) and a worker; the
monitor runs *in this process* (what beat runs every interval), so each poll's commands and
SSH connections are counted exactly. Submits `--jobs` `slurm` jobs (`echo`), then polls
until all succeeded, and prints, per poll: squeue / sacct / scontrol calls and SSH
connections opened by the monitor, against the naive baseline of one squeue and one
connection per followed job; and the time from SLURM's end of each job to `succeeded`.
Goals: 1 squeue per cluster per poll, at most 2 SSH connections per cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BenchError, log, percentile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="monitor poll interval")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    try:
        return run(args.jobs, args.interval, args.timeout)
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
    clusters = [cluster.config("bench")]
    with (
        tempfile.TemporaryDirectory(prefix="submitter-bench-hpc-") as home,
        make_backend("postgres-redis", Path(home)) as backend,
    ):
        backend.env["SUBMITTER_CLUSTERS"] = json.dumps(clusters)
        with make_stack(backend, beat=False) as stack:
            pool = ClusterPool()
            monitor = Monitor(stack.runtime, pool)
            accepted_before = _ssh_sessions(cluster)
            started = time.monotonic()
            ids = _submit(stack, count)
            polls = _follow(stack, monitor, ids, interval, timeout)
            elapsed = time.monotonic() - started
            jobs = [stack.job(i) for i in ids]
            pool.close()
            accepted = _ssh_sessions(cluster) - accepted_before
    _report(jobs, polls, interval)
    print(
        f"SSH sessions the cluster accepted in all (monitor + 2 worker processes): {accepted}; "
        f"wall time {elapsed:.0f}s for {count} jobs"
    )
    failed = [j for j in jobs if j["state"] != "succeeded"]
    return 1 if failed else 0


def _ssh_sessions(cluster: Any) -> int:
    """Sessions the test sshd accepted so far (it logs each at LogLevel VERBOSE)."""
    log_file = Path(cluster.tmpdir) / "sshd.log"
    return log_file.read_text(errors="replace").count("Accepted publickey")


def _submit(stack: Any, count: int) -> list[str]:
    started = time.monotonic()
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
    log(f"submitted {count} jobs in {time.monotonic() - started:.1f}s")
    return ids


def _follow(stack: Any, monitor: Any, ids: list[str], interval: float, timeout: float) -> list[Any]:
    """Poll like beat does, until every job ended."""
    from sqlalchemy import select

    from submitter.db.models import Job

    polls = []
    deadline = time.monotonic() + timeout
    while True:
        report = monitor.poll()
        poll = report.clusters.get("bench")
        if poll is not None and poll.followed:
            polls.append(poll)
        with stack.runtime.reads() as session:
            states = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(ids))).all())
        done = sum(1 for s in states.values() if s in ("succeeded", "failed", "cancelled"))
        if done == len(ids):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"timed out: {done}/{len(ids)} jobs ended")
        time.sleep(interval)
    return polls


def _slurm_end(job: dict[str, Any]) -> datetime | None:
    end = ((job.get("result") or {}).get("slurm") or {}).get("end_time")
    if not end:
        return None
    return datetime.fromisoformat(end).astimezone().astimezone(UTC)


def _report(jobs: list[dict[str, Any]], polls: list[Any], interval: float) -> None:
    succeeded = [j for j in jobs if j["state"] == "succeeded"]
    squeue = [p.commands.get("squeue", 0) for p in polls]
    confirm = [p.commands.get("sacct", 0) + p.commands.get("scontrol", 0) for p in polls]
    followed = [p.followed for p in polls]
    opened = sum(p.connections_opened for p in polls)
    naive_squeue = sum(followed) / max(1, len(polls))
    ours_squeue = sum(squeue) / max(1, len(polls))
    latencies = []
    for job in succeeded:
        end = _slurm_end(job)
        if end is not None:
            finished = datetime.fromisoformat(job["finished_at"])
            latencies.append((finished - end).total_seconds())
    print(f"jobs: {len(jobs)} submitted, {len(succeeded)} succeeded")
    print(f"polls with followed jobs: {len(polls)} (interval {interval:g}s)")
    print(
        f"squeue calls per poll: max {max(squeue, default=0)}, mean {ours_squeue:.2f}; "
        f"naive (one per followed job): mean {naive_squeue:.1f} → ratio "
        f"{ours_squeue / naive_squeue if naive_squeue else 0:.3f}"
    )
    print(
        f"sacct/scontrol calls per poll (confirming jobs that left squeue): "
        f"max {max(confirm, default=0)}, mean {sum(confirm) / max(1, len(polls)):.2f}"
    )
    print(
        f"SSH connections opened by the monitor: {opened} over {len(polls)} polls "
        f"(max per poll {max((p.connections_opened for p in polls), default=0)}); "
        f"naive (one per command): {sum(squeue) + sum(confirm)}"
    )
    if latencies:
        print(
            f"SLURM end → succeeded: p50 {percentile(latencies, 50):.2f}s, "
            f"p99 {percentile(latencies, 99):.2f}s, max {max(latencies):.2f}s "
            f"(poll interval {interval:g}s; expected ≈ interval/2 + collection)"
        )


if __name__ == "__main__":
    sys.exit(main())
