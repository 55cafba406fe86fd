"""What the sandbox costs a command job: `echo hi`, sandboxed against unsandboxed.

Two figures, each beside its baseline measured in the same run, as a difference in ms and
as a ratio:

- **process**: `submitter.sandbox.supervise.run(["echo", "hi"])` in this process, `--runs`
  times per mode, the modes interleaved (so drift in the machine's load hits all alike):
  `none` (the launcher and the command, no sandbox: the baseline), `bwrap+cgroups` (the
  sandbox with control groups, as root on this host) and `bwrap+watchdog` (the sandbox
  with the watchdog holding the limits, as in a non-root container).
- **job**: `--jobs` command jobs `echo hi`, one after the other, through the embedded stack
  (an in-process API, a real `submitter worker` subprocess), per mode `none` and `bwrap`
  (`SUBMITTER_SANDBOX`), in two rounds each (none, bwrap, none, bwrap). The figure is the
  job's own run time, `finished_at - started_at` as the worker recorded it: the job folder,
  the metrics follower, the sandbox, collecting, the result.

The goal (issue 24): the sandbox adds under 100 ms to a job's start-up.

Run from the repository root (as root, to see control groups; bubblewrap installed):

    .venv/bin/python bench/sandbox.py [--runs 100] [--jobs 40]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchError, clean_env, log, percentile, signal_group

from submitter.sandbox import bwrap, cgroups, supervise

GOAL_MS = 100.0


def process_figures(runs: int) -> dict[str, list[float]]:
    """Milliseconds per `echo hi` in each mode, interleaved."""
    modes = {
        "none": {"sandboxed": False, "cgroups": False},
        "bwrap+cgroups": {"sandboxed": True, "cgroups": True},
        "bwrap+watchdog": {"sandboxed": True, "cgroups": False},
    }
    if not cgroups.available():
        log("no control groups here (not root?): bwrap+cgroups is measured as the watchdog")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="submitter-bench-") as scratch:
        folder = Path(scratch) / "job"
        (folder / ".submitter" / "tmp").mkdir(parents=True)
        supervision = supervise.Supervision(lambda _, __: None, threading.Event(), 1.0, set())
        limits = supervise.Limits(memory_bytes=1 << 30, processes=64, disk_bytes=1 << 30)
        for n in range(runs + 3):
            for mode, how in modes.items():
                started = time.perf_counter()
                outcome = supervise.run(
                    supervision,
                    ["echo", "hi"],
                    view=bwrap.View(folder),
                    env={"PATH": "/usr/bin:/bin"},
                    limits=limits,
                    stdout=Path(scratch) / "out",
                    stderr=Path(scratch) / "err",
                    job_id="bench",
                    **how,
                )
                if outcome.exit_code != 0:
                    raise BenchError(f"{mode}: echo failed: {outcome}")
                if n >= 3:  # the first runs warm the page cache
                    times[mode].append((time.perf_counter() - started) * 1000)
    return times


def job_figures(jobs: int) -> dict[str, list[float]]:
    """Milliseconds of each `echo hi` command job's run, per SUBMITTER_SANDBOX mode."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from submitter.api.app import create_app
    from submitter.config import load_settings
    from submitter.db.models import Job
    from submitter.runtime import Runtime

    times: dict[str, list[float]] = {"none": [], "bwrap": []}
    with tempfile.TemporaryDirectory(prefix="submitter-bench-") as home:
        admin = "sk_bench_" + secrets.token_urlsafe(16)
        env = clean_env(SUBMITTER_HOME=home, SUBMITTER_ADMIN_KEY=admin)
        submitter = [sys.executable, "-m", "submitter"]
        subprocess.run([*submitter, "db", "upgrade"], env=env, check=True, capture_output=True)
        settings = load_settings(home=Path(home), admin_key=admin)
        headers = {"Authorization": f"Bearer {admin}"}
        with TestClient(create_app(settings)) as api:
            for mode in ("none", "bwrap", "none", "bwrap"):
                worker = subprocess.Popen(
                    [*submitter, "worker", "--concurrency=1"],
                    env={**env, "SUBMITTER_SANDBOX": mode},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    ids = [_run_job(api, headers) for _ in range(jobs // 2 + 2)][2:]
                finally:  # a warm shutdown of the main process (not its whole group)
                    worker.terminate()
                    try:
                        worker.wait(60)
                    except subprocess.TimeoutExpired:
                        signal_group(worker, signal.SIGKILL)
                        worker.wait(10)
                runtime = Runtime(settings)
                with runtime.engine.connect() as connection:
                    rows = connection.execute(
                        select(Job.started_at, Job.finished_at, Job.result).where(Job.id.in_(ids))
                    ).all()
                runtime.close()
                for started, finished, result in rows:
                    if result["sandboxed"] is not (mode == "bwrap"):
                        raise BenchError(f"a job of mode {mode} ran with sandboxed={result}")
                    times[mode].append((finished - started).total_seconds() * 1000)
    return times


def _run_job(api: object, headers: dict[str, str]) -> str:
    body = {"kind": "command", "spec": {"command": ["echo", "hi"]}}
    response = api.post("/api/v1/jobs", json=body, headers=headers)  # type: ignore[attr-defined]
    if response.status_code != 202:
        raise BenchError(f"submit answered {response.status_code}: {response.text}")
    job_id = str(response.json()["id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = api.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["state"]  # type: ignore[attr-defined]
        if state == "succeeded":
            return job_id
        if state in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} {state}")
        time.sleep(0.02)
    raise BenchError(f"job {job_id} did not finish within 60 s")


def report(title: str, times: dict[str, list[float]], baseline: str) -> list[float]:
    """Print each mode's median and p90 beside the baseline's; the medians' differences."""
    base = statistics.median(times[baseline])
    print(f"\n{title}")
    print("| mode | n | median ms | p90 ms | added ms | ratio |\n|---|---|---|---|---|---|")
    added = []
    for mode, values in times.items():
        median = statistics.median(values)
        extra = median - base
        if mode != baseline:
            added.append(extra)
        print(
            f"| {mode} | {len(values)} | {median:.1f} | {percentile(values, 90):.1f} | "
            f"{extra:+.1f} | {median / base:.2f} |"
        )
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    problem = bwrap.probe()
    if problem is not None:
        raise SystemExit(f"no sandbox here: {problem}")
    load = os.getloadavg()
    log(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    added = report("process: echo hi", process_figures(args.runs), "none")
    added += report(
        "job: echo hi command job (finished_at - started_at)", job_figures(args.jobs), "none"
    )
    worst = max(added)
    verdict = "met" if worst < GOAL_MS else "NOT MET"
    print(
        f"\nsandbox start-up cost: at most {worst:.1f} ms added (goal < {GOAL_MS:g} ms): {verdict}"
    )
    log(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
