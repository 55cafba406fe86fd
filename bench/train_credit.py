"""Training benchmark: Submitter's `train` job on credit.csv against PyCaret's compare_models().

What it measures, one after the other on the same machine (never concurrently):

- **Submitter**: `submitter api` + `submitter worker --concurrency 1` on the embedded default
  (SQLite database and broker, local folder store) in a temp `SUBMITTER_HOME`. Once the API
  answers /ready and the worker has run a warm-up `echo` job, the clock starts: the CSV is
  uploaded with `Client.upload_dataset`, then `Client.train("credit", "default", "credit",
  folds=5)` runs with every other setting at its default (the curated model set, AUC, a 20 %
  stratified holdout, seed 0). Two figures: **train job wall** = the job's `finished_at -
  started_at` from the API (read the Parquet, 5-fold CV of every candidate, refit the best,
  score the holdout, register), and **end to end** = upload start → the job's `finished_at`
  (upload + CSV→Parquet + queueing + the job). The worker's pool child is cold for ML: it
  imports scikit-learn/LightGBM inside the job, as it would in production.
- **PyCaret 3.3.2** (the baseline) in its own virtual environment, never a dependency of
  Submitter: a fresh Python process reads the CSV with pandas, then the clock runs over
  `setup(df, target='default', session_id=123, fold=5, verbose=False, html=False)` +
  `compare_models(verbose=False)` (imports and the CSV read excluded). PyCaret's defaults: a
  70/30 split, `n_jobs=-1`, `turbo=True`, the leaderboard sorted by Accuracy, so its "best"
  is the most accurate model; its CV AUC and the best CV AUC of its leaderboard are both shown.

Goals (from the issue): our best CV AUC >= 0.785, and our wall time <= 0.25x PyCaret's (the
ratio uses the train job wall; the end-to-end ratio is shown beside it).

The PyCaret venv (~1.1 GB) is created on first use with `python3 -m venv` and
`pip install pycaret==3.3.2 six` (six: scikit-plot imports it and PyCaret does not pull it in),
then reused. Run from the repository root:

    .venv/bin/python bench/train_credit.py [--data PATH] [--pycaret-venv DIR]
        [--base-python python3] [--skip-baseline] [--timeout 1800]

`--data` defaults to `<repo>/tests/data/credit.csv`; `--pycaret-venv` to
`~/.cache/submitter-bench/pycaret-3.3.2`. Exit status 0 when every step ran (whatever the
figures), 1 when something failed, 130 on Ctrl+C; the servers, the baseline process and the
temp files are removed on exit (the PyCaret venv stays, to be reused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BenchError, clean_env, free_port, log
from _common import signal_group as _signal_group
from _pycaret import DEFAULT_PYCARET_VENV, PYCARET_VERSION, ensure_pycaret

from submitter.client import Client

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "tests" / "data" / "credit.csv"

TARGET = "default"
DATASET_NAME = "credit"
MODEL_NAME = "credit"
FOLDS = 5
GOAL_AUC = 0.785
GOAL_WALL_RATIO = 0.25
START_TIMEOUT = 90.0
RESULT_MARKER = "BENCH_RESULT "


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------- processes


class Processes:
    """Subprocesses of this benchmark, each in its own process group, logs in a folder."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[name] = proc
        return proc

    def run(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        timeout: float,
        cwd: Path | None = None,
    ) -> str:
        """Run to completion (killed on timeout or Ctrl+C); return its output, raise on failure."""
        proc = self.start(name, cmd, env, cwd)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{name} still running after {timeout:.0f} s:\n{self.tail(name)}"
            ) from None
        finally:
            self.stop(name)
        if proc.returncode != 0:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{self.tail(name, 40)}")
        return self.output(name)

    def check_alive(self) -> None:
        for name, proc in self.running.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def output(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.output(name).splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM the process group (Celery's pool children too), SIGKILL it if it lingers."""
        proc = self.running.pop(name, None)
        if proc is None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        _signal_group(proc, signal.SIGKILL)  # children that outlived their parent

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


# --------------------------------------------------------------------------- results


@dataclass
class Side:
    """One side of the comparison."""

    name: str
    wall_seconds: float  # the figure the ratio uses
    best_model: str
    best_auc: float  # CV AUC of the side's best model
    leaderboard: list[tuple[str, float | None, float | None]]  # (model, CV AUC, fit s/fold)
    end_to_end_seconds: float | None = None
    holdout_auc: float | None = None
    note: str = ""
    timeline: list[str] = field(default_factory=list)  # the job's log, seconds in

    @property
    def top_auc(self) -> float:
        """The highest CV AUC on the leaderboard (PyCaret ranks by Accuracy, not AUC)."""
        return max(
            (auc for _, auc, _ in self.leaderboard if auc is not None), default=self.best_auc
        )


# --------------------------------------------------------------------------- Submitter


def run_submitter(data: Path, work: Path, processes: Processes, timeout: float) -> Side:
    """Upload `data` and train on it through the API of an embedded stack in `work`."""
    home = work / "home"
    home.mkdir()
    port = free_port()
    admin_key = "sk_bench_" + secrets.token_urlsafe(16)
    env = clean_env(
        SUBMITTER_HOME=str(home),
        SUBMITTER_ADMIN_KEY=admin_key,
        SUBMITTER_API_HOST="127.0.0.1",
        SUBMITTER_API_PORT=str(port),
        SUBMITTER_LOG_LEVEL="WARNING",
    )
    submitter = [sys.executable, "-m", "submitter"]
    processes.run("db-upgrade", [*submitter, "db", "upgrade"], env, timeout=START_TIMEOUT)
    processes.start("api", [*submitter, "api"], env)
    processes.start("worker", [*submitter, "worker", "--concurrency", "1"], env)
    try:
        with Client(f"http://127.0.0.1:{port}", admin_key, timeout=60) as client:
            _wait_ready(client, processes)
            log("Submitter: API ready; warming the worker up with an echo job")
            warmup = client.submit("echo", {"message": "warm-up"})
            _wait_job(client, warmup["id"], START_TIMEOUT, processes)

            log(f"Submitter: upload + train (load average {load_average()})")
            started = time.time()
            dataset = client.upload_dataset(data, DATASET_NAME)
            uploaded = time.time()
            log(f"  uploaded {dataset['name']}@{dataset['version']} in {uploaded - started:.1f} s")
            handle = client.train(DATASET_NAME, TARGET, MODEL_NAME, folds=FOLDS)
            job = _wait_job(client, handle.id, timeout, processes)
            lines = client.logs(handle.id)
    finally:
        processes.stop("worker")
        processes.stop("api")

    result = job["result"]
    job_started, job_finished = _timestamp(job["started_at"]), _timestamp(job["finished_at"])
    leaderboard = [
        (row["model"], row.get("AUC"), row.get("fit_seconds")) for row in result["leaderboard"]
    ]
    if result.get("metric") != "AUC":
        raise BenchError(f"the job ranked by {result.get('metric')}, not AUC: {result}")
    notes = [f"upload {uploaded - started:.1f} s"]
    if result.get("failed"):
        notes.append(f"failed: {result['failed']}")
    if result.get("skipped"):
        notes.append(f"skipped: {result['skipped']}")
    return Side(
        name="Submitter",
        wall_seconds=job_finished - job_started,
        end_to_end_seconds=job_finished - started,
        best_model=result["best_model"],
        best_auc=result["cv"]["AUC"],
        holdout_auc=(result.get("holdout") or {}).get("AUC"),
        leaderboard=leaderboard,
        note="; ".join(notes),
        timeline=[
            f"{_timestamp(line['at']) - job_started:6.1f}  {line['message']}" for line in lines
        ],
    )


def _wait_ready(client: Client, processes: Processes) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not client.ready():
        processes.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"API not ready after {START_TIMEOUT:.0f} s:\n{processes.tail('api')}")
        time.sleep(0.1)


def _wait_job(client: Client, job_id: str, timeout: float, processes: Processes) -> dict[str, Any]:
    """Poll the job until it ends (checking the servers are alive); raise unless it succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job["state"] == "succeeded":
            return job
        if job["state"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} {job['state']}: {job.get('error') or job['message']}")
        processes.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"job {job_id} still {job['state']} after {timeout:.0f} s "
                f"({job.get('message')}):\n{processes.tail('worker')}"
            )
        time.sleep(0.25)


def _timestamp(value: str) -> float:
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:  # the API serialises UTC
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


# --------------------------------------------------------------------------- PyCaret


BASELINE_SCRIPT = """
import json, sys, time
import pandas as pd
from pycaret.classification import compare_models, pull, setup

df = pd.read_csv(sys.argv[1])
started = time.time()
setup(df, target=sys.argv[2], session_id=123, fold=int(sys.argv[3]), verbose=False, html=False)
best = compare_models(verbose=False)
elapsed = time.time() - started
board = pull()
print(MARKER + json.dumps({
    "elapsed": elapsed,
    "best": type(best).__name__,
    "best_id": str(board.index[0]),
    "best_auc": float(board["AUC"].iloc[0]),
    "leaderboard": [
        [f"{index} ({name})", float(auc), float(seconds)]
        for index, name, auc, seconds in zip(
            board.index, board["Model"], board["AUC"], board["TT (Sec)"]
        )
    ],
}), flush=True)
""".replace("MARKER", repr(RESULT_MARKER))


def run_pycaret(python: Path, data: Path, work: Path, processes: Processes, timeout: float) -> Side:
    """setup() + compare_models() in a fresh process of the PyCaret venv (cwd: a temp dir,
    where PyCaret writes its logs.log)."""
    cwd = work / "pycaret"
    cwd.mkdir()
    env = clean_env(MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    log(f"PyCaret: setup + compare_models (load average {load_average()})")
    started = time.time()
    output = processes.run(
        "pycaret",
        [str(python), "-c", BASELINE_SCRIPT, str(data.resolve()), TARGET, str(FOLDS)],
        env,
        timeout=timeout,
        cwd=cwd,
    )
    process_seconds = time.time() - started
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise BenchError(f"the PyCaret script printed no result:\n{output[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    return Side(
        name=f"PyCaret {PYCARET_VERSION}",
        wall_seconds=result["elapsed"],
        best_model=f"{result['best_id']} ({result['best']})",
        best_auc=result["best_auc"],
        leaderboard=[(name, auc, seconds) for name, auc, seconds in result["leaderboard"]],
        note=f"process incl. imports + read_csv {process_seconds:.1f} s; ranked by Accuracy",
    )


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def print_report(ours: Side, baseline: Side | None, data: Path, loads: list[str]) -> None:
    print(f"\n{data} ({FOLDS} folds), {os.cpu_count()} CPUs; load average (1/5/15 min):")
    for when in loads:
        print(f"  {when}")
    print()
    header = (
        f"{'':<16} {'wall s':>8} {'end-to-end s':>12}  {'best model':<34} {'best CV AUC':>11} "
        f"{'top CV AUC':>10} {'holdout AUC':>11}"
    )
    print(header)
    print("-" * len(header))
    for side in filter(None, (ours, baseline)):
        print(
            f"{side.name:<16} {side.wall_seconds:>8.1f} {_fmt(side.end_to_end_seconds, '.1f'):>12}"
            f"  {side.best_model:<34} {side.best_auc:>11.4f} {side.top_auc:>10.4f} "
            f"{_fmt(side.holdout_auc, '.4f'):>11}"
        )
    print()
    print(
        f"goal: best CV AUC >= {GOAL_AUC}: {ours.best_auc:.4f} -> {_met(ours.best_auc >= GOAL_AUC)}"
    )
    if baseline is not None:
        ratio = ours.wall_seconds / baseline.wall_seconds
        assert ours.end_to_end_seconds is not None
        e2e = ours.end_to_end_seconds / baseline.wall_seconds
        print(
            f"goal: wall ours/PyCaret <= {GOAL_WALL_RATIO}: train job {ratio:.3f} -> "
            f"{_met(ratio <= GOAL_WALL_RATIO)} (end to end {e2e:.3f} -> "
            f"{_met(e2e <= GOAL_WALL_RATIO)})"
        )
        print(f"      AUC ours - PyCaret's best: {ours.best_auc - baseline.best_auc:+.4f}")
    print(
        "\nwall s: Submitter = the train job's finished_at - started_at; PyCaret = setup + "
        "compare_models.\nend-to-end s: upload start -> the train job's finished_at."
    )
    for side in filter(None, (ours, baseline)):
        print(f"\n{side.name} leaderboard{' - ' + side.note if side.note else ''}:")
        print(f"  {'model':<44} {'CV AUC':>7} {'time s':>7}")
        for model, auc, seconds in side.leaderboard:
            print(f"  {model:<44} {_fmt(auc, '.4f'):>7} {_fmt(seconds, '.2f'):>7}")
    if ours.timeline:
        print("\nSubmitter train job log (seconds after started_at):")
        for line in [*ours.timeline, f"{ours.wall_seconds:6.1f}  (finished_at)"]:
            print(f"  {line}")
    print(
        "\ntime s: Submitter = mean fit seconds per fold (one thread each, folds in parallel); "
        "PyCaret = its TT (Sec) column."
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the credit CSV")
    parser.add_argument(
        "--pycaret-venv", type=Path, default=DEFAULT_PYCARET_VENV, help="created if missing"
    )
    parser.add_argument(
        "--base-python", default="python3", help="Python 3.9-3.11 to create the PyCaret venv"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="Submitter only")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per side")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    data: Path = args.data
    if not data.is_file():
        raise BenchError(f"no data file at {data} (use --data)")
    python = None
    if not args.skip_baseline:
        # Installed first, so pip's download and unpacking never overlap a measurement.
        python = ensure_pycaret(args.pycaret_venv.expanduser(), args.base_python, processes.run)
    loads = [f"before Submitter: {load_average()}"]
    ours = run_submitter(data, work, processes, args.timeout)
    loads.append(f"after Submitter:  {load_average()}")
    baseline = None
    if python is not None:
        baseline = run_pycaret(python, data, work, processes, args.timeout)
        loads.append(f"after PyCaret:    {load_average()}")
    print_report(ours, baseline, data, loads)


def run_in_temp_dir(
    run: Callable[[argparse.Namespace, Path, Processes], None],
    args: argparse.Namespace,
    prefix: str,
    stopping: str,
) -> int:
    """`run(args, folder, processes)` in a temp folder; the exit status (0, 1 on a
    BenchError, 130 on Ctrl+C). Ctrl+C (even when started with SIGINT ignored, as `cmd &`
    does) and SIGTERM unwind, so the finally blocks stop every process and remove the
    folder; `stopping` says what is stopped (logged on Ctrl+C)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        processes = Processes(Path(tmp))
        try:
            run(args, Path(tmp), processes)
        except BenchError as error:
            log(f"FAILED: {error}")
            return 1
        except KeyboardInterrupt:
            log(f"interrupted; stopping {stopping} and cleaning up")
            return 130
        finally:
            processes.stop_all()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_in_temp_dir(run, parse_args(argv), "submitter-bench-train-", "the servers")


if __name__ == "__main__":
    sys.exit(main())
