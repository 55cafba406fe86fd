"""Training benchmark over several data sets: Submitter's default training against PyCaret's
`setup` + `compare_models`, on the same rows and the same folds.

Data sets (`--datasets`, comma-separated, default all): `credit` (tests/data/credit.csv,
binary), scikit-learn's `breast_cancer` (binary), `wine` and `digits` (multiclass), `diabetes`
(regression), and `synthetic`: 6,000 generated rows with string categoricals, missing values
in numbers and strings, and a 12 % positive class (binary).

Per data set, one after the other, never concurrently:

- **Submitter**: `submitter.ml.train(frame, target)` in this process with its defaults (the
  default model set, the blend, 5 folds, a 20 % stratified holdout, seed 0). Wall = that
  call (CV of every candidate, refit of the winner, holdout scoring); imports are warmed up
  before the first data set.
- **PyCaret 3.3.2** in its own venv (`_pycaret.py`; `_train_suite_pycaret.py` in a fresh
  process): `setup(train rows, test_data=holdout rows, fold_strategy=PredefinedSplit(our
  folds), session_id=123)` + `compare_models(sort=<metric>)`, everything else at PyCaret's
  defaults (turbo, n_jobs=-1). Wall = setup + compare_models (imports and CSV reads
  excluded). Its figure is the best CV value of the metric on its leaderboard.

The rows and folds are `submitter.ml.training.split_rows`, the function `train` itself uses;
the script checks that our run held out the same rows. Metric: AUC (binary), Accuracy
(multiclass), R2 (regression), the mean over the 5 folds on both sides.

Goals (issue 14): per data set our best CV metric >= PyCaret's best, and our wall <= 0.2x
PyCaret's; on credit our CV AUC >= 0.785. PyCaret's results are cached per data set (key:
the data's hash, the folds, the PyCaret version) in `--cache` (default
`~/.cache/submitter-bench/train_suite_pycaret.json`); a cached figure is printed as such with
when it was measured and the load average then; `--fresh` re-runs PyCaret.

    .venv/bin/python bench/train_suite.py [--datasets credit,wine,...] [--fresh]
        [--skip-baseline] [--pycaret-venv DIR] [--base-python python3] [--cache PATH]
        [--timeout 900]

Exit status 0 when every step ran (whatever the figures), 1 on a failure, 130 on Ctrl+C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import BenchError, clean_env, log
from _pycaret import DEFAULT_PYCARET_VENV, PYCARET_VERSION, ensure_pycaret
from train_credit import Processes, load_average, run_in_temp_dir

from submitter.ml import train
from submitter.ml.training import resolve_task, split_rows

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYCARET_SCRIPT = BENCH_DIR / "_train_suite_pycaret.py"
DEFAULT_CACHE = Path.home() / ".cache" / "submitter-bench" / "train_suite_pycaret.json"
RESULT_MARKER = "BENCH_RESULT "
FOLDS, HOLDOUT, SEED = 5, 0.2, 0
GOAL_WALL_RATIO = 0.2
GOAL_CREDIT_AUC = 0.785


# --------------------------------------------------------------------------- data sets


def _sklearn(name: str) -> Callable[[], tuple[pd.DataFrame, str]]:
    def load() -> tuple[pd.DataFrame, str]:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
        return frame, "target"

    return load


def _credit() -> tuple[pd.DataFrame, str]:
    return pd.read_csv(REPO / "tests" / "data" / "credit.csv"), "default"


def _synthetic(n: int = 6000, seed: int = 7) -> tuple[pd.DataFrame, str]:
    """Numbers with a nonlinear signal, three string categoricals (one with many rare
    levels) that carry signal, missing values in both, and about 12 % positives."""
    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(n, 8))
    city = rng.choice([f"c{i:02d}" for i in range(40)], size=n, p=_zipf(40, rng))
    plan = rng.choice(["basic", "plus", "pro", "team"], size=n, p=[0.5, 0.25, 0.15, 0.1])
    channel = rng.choice(["web", "app", "phone", "shop", "partner"], size=n)
    city_effect = dict(zip(sorted(set(city)), rng.normal(scale=0.8, size=40), strict=False))
    plan_effect = {"basic": -0.6, "plus": 0.0, "pro": 0.5, "team": 0.9}
    logit = (
        1.2 * numbers[:, 0]
        - 0.8 * numbers[:, 1]
        + 0.9 * np.sin(2 * numbers[:, 2])
        + 0.6 * numbers[:, 3] * numbers[:, 4]
        + np.vectorize(city_effect.get)(city)
        + np.vectorize(plan_effect.get)(plan)
        + (channel == "partner") * 0.7
        - 2.6
    )
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "churn", "stay")
    frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(8)])
    frame["city"], frame["plan"], frame["channel"] = city, plan, channel
    for column in ["x1", "x3", "x5", "city", "plan"]:
        frame.loc[rng.random(n) < 0.12, column] = None
    frame["label"] = label
    return frame, "label"


def _zipf(k: int, rng: np.random.Generator) -> np.ndarray:
    weights = 1 / np.arange(1, k + 1)
    return weights / weights.sum()


DATASETS: dict[str, Callable[[], tuple[pd.DataFrame, str]]] = {
    "credit": _credit,
    "breast_cancer": _sklearn("breast_cancer"),
    "wine": _sklearn("wine"),
    "digits": _sklearn("digits"),
    "diabetes": _sklearn("diabetes"),
    "synthetic": _synthetic,
}


# --------------------------------------------------------------------------- the two sides


@dataclass
class Figures:
    best: float
    best_model: str
    wall: float
    leaderboard: list[tuple[str, float | None, float | None]]
    note: str = ""


@dataclass
class Case:
    name: str
    frame: pd.DataFrame
    target: str
    task: str
    metric: str
    train_idx: np.ndarray
    hold_idx: np.ndarray
    test_fold: list[int]

    @property
    def key(self) -> str:
        digest = hashlib.sha256(pd.util.hash_pandas_object(self.frame).to_numpy().tobytes())
        digest.update(json.dumps([self.test_fold, self.hold_idx.tolist()]).encode())
        return f"{self.name}:{digest.hexdigest()[:16]}:pycaret-{PYCARET_VERSION}:round6"


def prepare(name: str) -> Case:
    frame, target = DATASETS[name]()
    labels = frame[target]
    task, _ = resolve_task("auto", labels)
    classes = labels.nunique() if task == "classification" else 0
    metric = "R2" if task == "regression" else ("AUC" if classes == 2 else "Accuracy")
    y = labels.to_numpy()
    train_idx, hold_idx, splits = split_rows(y, task, folds=FOLDS, holdout=HOLDOUT, seed=SEED)
    test_fold = np.empty(len(train_idx), dtype=int)
    for fold, (_, val_idx) in enumerate(splits):
        test_fold[val_idx] = fold
    return Case(name, frame, target, task, metric, train_idx, hold_idx, test_fold.tolist())


def run_ours(case: Case) -> Figures:
    started = time.perf_counter()
    result = train(case.frame, case.target, folds=FOLDS, holdout=HOLDOUT, seed=SEED)
    wall = time.perf_counter() - started
    if result.metric != case.metric:
        raise BenchError(f"{case.name}: train ranked by {result.metric}, not {case.metric}")
    expected = case.frame[case.target].iloc[case.hold_idx].astype(str).tolist()
    if [str(v) for v in np.asarray(result.y_holdout).tolist()] != expected:
        raise BenchError(f"{case.name}: train held out other rows than split_rows")
    board = [(r["label"], r.get(case.metric), r.get("fit_seconds")) for r in result.leaderboard]
    notes = []
    if result.skipped:
        notes.append(f"skipped {result.skipped}")
    if result.failed:
        notes.append(f"failed {result.failed}")
    return Figures(
        best=float(result.leaderboard[0][case.metric]),
        best_model=result.leaderboard[0]["label"],
        wall=wall,
        leaderboard=board,
        note="; ".join(notes),
    )


def run_pycaret(
    case: Case, python: Path, work: Path, processes: Processes, timeout: float
) -> tuple[Figures, dict[str, Any]]:
    folder = work / case.name
    folder.mkdir()
    case.frame.iloc[case.train_idx].to_csv(folder / "train.csv", index=False)
    case.frame.iloc[case.hold_idx].to_csv(folder / "holdout.csv", index=False)
    spec = {
        "target": case.target,
        "task": case.task,
        "metric": case.metric,
        "test_fold": case.test_fold,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    before = load_average()
    env = clean_env(MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    output = processes.run(
        f"pycaret-{case.name}",
        [str(python), str(PYCARET_SCRIPT), str(folder)],
        env,
        timeout=timeout,
        cwd=folder,
    )
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise BenchError(f"PyCaret printed no result for {case.name}:\n{output[-3000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    record = {
        **result,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_before": before,
        "load_after": load_average(),
    }
    return _pycaret_figures(record, cached=False), record


def _pycaret_figures(record: dict[str, Any], *, cached: bool) -> Figures:
    when = f"load {record['load_before']} -> {record['load_after']}"
    note = f"CACHED from {record['measured_at']} ({when})" if cached else f"measured now ({when})"
    return Figures(
        best=record["best"],
        best_model=record["best_model"],
        wall=record["elapsed"],
        leaderboard=[tuple(row) for row in record["leaderboard"]],  # type: ignore[misc]
        note=note,
    )


# --------------------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(rows: list[tuple[Case, Figures, Figures | None]], loads: list[str]) -> None:
    print(f"\n{os.cpu_count()} CPUs; load average (1/5/15 min):")
    for line in loads:
        print(f"  {line}")
    for case, ours, theirs in rows:
        print(
            f"\n== {case.name}: {case.task}, {len(case.frame)} rows "
            f"({len(case.train_idx)} cross-validated, {FOLDS} folds), metric {case.metric}"
        )
        for side, figures in (("Submitter", ours), (f"PyCaret {PYCARET_VERSION}", theirs)):
            if figures is None:
                continue
            note = f" - {figures.note}" if figures.note else ""
            print(
                f"  {side}: best {figures.best:.4f} ({figures.best_model}), "
                f"wall {figures.wall:.1f} s{note}"
            )
            for model, value, seconds in figures.leaderboard:
                value_text = "-" if value is None else f"{value:.4f}"
                seconds_text = "-" if seconds is None else f"{seconds:.2f}"
                print(f"      {model:<52} {value_text:>8} {seconds_text:>7}")
    print("\nper data set (metric: mean over the same 5 folds; wall s: each side's train call)")
    header = (
        f"{'data set':<14} {'metric':<8} {'ours':>7} {'PyCaret':>7} {'diff':>8} "
        f"{'ours s':>7} {'PyC s':>7} {'ratio':>6}  goals"
    )
    print(header)
    print("-" * len(header))
    for case, ours, theirs in rows:
        goals = []
        if case.name == "credit":
            goals.append(f"AUC>={GOAL_CREDIT_AUC} {_met(ours.best >= GOAL_CREDIT_AUC)}")
        if theirs is None:
            print(f"{case.name:<14} {case.metric:<8} {ours.best:>7.4f} {'-':>7} {'-':>8} "
                  f"{ours.wall:>7.1f} {'-':>7} {'-':>6}  {', '.join(goals)}")  # fmt: skip
            continue
        ratio = ours.wall / theirs.wall
        goals.insert(0, f"metric>=PyCaret {_met(ours.best >= theirs.best)}")
        goals.insert(1, f"wall<={GOAL_WALL_RATIO}x {_met(ratio <= GOAL_WALL_RATIO)}")
        cached = " (cached)" if theirs.note.startswith("CACHED") else ""
        print(
            f"{case.name:<14} {case.metric:<8} {ours.best:>7.4f} {theirs.best:>7.4f} "
            f"{ours.best - theirs.best:>+8.4f} {ours.wall:>7.1f} {theirs.wall:>7.1f} "
            f"{ratio:>6.3f}  {', '.join(goals)}{cached}"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    parser.add_argument("--fresh", action="store_true", help="re-run PyCaret, ignore the cache")
    parser.add_argument("--skip-baseline", action="store_true", help="Submitter only")
    parser.add_argument("--pycaret-venv", type=Path, default=DEFAULT_PYCARET_VENV)
    parser.add_argument("--base-python", default="python3", help="Python 3.9-3.11 for PyCaret")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per PyCaret run")
    args = parser.parse_args(argv)
    args.names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in args.names if name not in DATASETS]
    if unknown or not args.names:
        parser.error(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")
    return args


def _warm_up() -> None:
    """Import and run the ML stack once, so the first data set's wall has no import cost
    (PyCaret's imports are outside its clock too)."""
    frame = pd.DataFrame({"a": np.arange(60.0), "s": ["x", "y", "z"] * 20, "t": [0, 1] * 30})
    train(frame, "t", folds=2, holdout=0)


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    python = None
    if not args.skip_baseline:
        python = ensure_pycaret(args.pycaret_venv.expanduser(), args.base_python, processes.run)
    cache: dict[str, Any] = {}
    if args.cache.exists():
        cache = json.loads(args.cache.read_text())
    _warm_up()
    loads = [f"start: {load_average()}"]
    rows: list[tuple[Case, Figures, Figures | None]] = []
    for name in args.names:
        case = prepare(name)
        log(f"{name}: Submitter (load average {load_average()})")
        ours = run_ours(case)
        log(f"{name}: Submitter {case.metric} {ours.best:.4f} in {ours.wall:.1f} s")
        theirs = None
        if python is not None:
            record = None if args.fresh else cache.get(case.key)
            if record is not None:
                log(f"{name}: PyCaret figure CACHED from {record['measured_at']}")
                theirs = _pycaret_figures(record, cached=True)
            else:
                log(f"{name}: PyCaret (load average {load_average()})")
                theirs, record = run_pycaret(case, python, work, processes, args.timeout)
                cache[case.key] = record
                args.cache.parent.mkdir(parents=True, exist_ok=True)
                args.cache.write_text(json.dumps(cache, indent=1))
            log(f"{name}: PyCaret {case.metric} {theirs.best:.4f} in {theirs.wall:.1f} s")
        loads.append(f"after {name}: {load_average()}")
        rows.append((case, ours, theirs))
    report(rows, loads)


def main(argv: list[str] | None = None) -> int:
    return run_in_temp_dir(run, parse_args(argv), "submitter-bench-suite-", "PyCaret")


if __name__ == "__main__":
    sys.exit(main())
