"""Real-time prediction benchmark: Submitter against a minimal FastAPI app and MLflow.

One scikit-learn pipeline (logistic regression, `submitter.ml.train(models=["lr"], folds=2)`
on the credit data; target `default`) is served three ways, one server at a time, each with
one Uvicorn worker process:

- **Submitter**: the model is registered (`register_version`, alias `production`) in a temp
  embedded `SUBMITTER_HOME` (SQLite + local store) and `submitter api --workers 1` serves
  `POST /api/v1/models/credit/predict` with `{"rows": [{...}]}`, authenticated with a viewer
  API key (the path a real client takes: key lookup, version resolution, schema check).
- **minimal**: `bench/_predict_minimal_app.py`, FastAPI + Uvicorn holding the same skops
  file in memory: `POST /predict`, same body, `pipeline.predict` + `predict_proba` on
  `pd.DataFrame(rows)`, nothing else.
- **MLflow**: `mlflow models serve --env-manager local -w 1` of the same fitted pipeline,
  saved with `mlflow.sklearn.save_model` (by `bench/_predict_mlflow_save.py`, which loads the
  skops file: no retraining) in MLflow's own virtual environment, created on first use in
  `--mlflow-venv` (default `~/.cache/submitter-bench/mlflow-sklearn-<our version>`) with
  `pip install mlflow scikit-learn==<ours> skops==<ours> pandas` and reused afterwards.
  Body `{"dataframe_split": {"columns": [...], "data": [[...]]}}` at `/invocations`; it
  answers predictions only (MLflow's default `predict`), the other two probabilities too.

Load: `bench/_predict_load.py` in a separate process, `--concurrency` asyncio tasks over as
many keep-alive connections (HTTP/1.1 through h11), each sending 1-row requests back to
back, cycling through 64 real credit rows; `--warmup-seconds` first (not counted), then
`--seconds` measured.
Before that, every server must answer those 64 rows with the predictions (and probabilities)
the pipeline gives in this process. It prints req/s, p50/p99 latency, the ratio to Submitter
and the goals: Submitter >= 0.8x the minimal app, >= 2x MLflow.

Run from the repository root:

    .venv/bin/python bench/predict.py [--seconds 20] [--concurrency 8] [--warmup-seconds 3]
        [--data tests/data/credit.csv] [--no-mlflow] [--py-spy OUT.txt]

`--py-spy OUT` records the Submitter API process with py-spy during its measured run
(collapsed stacks, for flame graphs or grep); sampling slows it, so its figures are marked.
Exit status 0 when every server ran (whatever the figures), 1 on a failure, 130 on Ctrl+C;
every server and temp folder is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import sklearn
import skops

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from dispatch import (  # noqa: E402
    BenchError,
    Processes,
    clean_env,
    free_port,
    log,
    wait_until,
)

MODEL_NAME = "credit"
TARGET = "default"
SAMPLE_ROWS = 64
START_TIMEOUT = 120.0
GOAL_VS_MINIMAL = 3.0  # req/s at 32 connections
GOAL_VS_MLFLOW = 4.0  # req/s at 32 connections
GOAL_P50_VS_MINIMAL = 0.5  # p50 at 1 connection, at most
PROBABILITY_TOLERANCE = 1e-4  # submitter.ml.compiled.PROBABILITY_TOLERANCE (float32 graph)
CONCURRENCIES = (1, 8, 32)
DEFAULT_DATA = REPO / "tests" / "data" / "credit.csv"
DEFAULT_MLFLOW_VENV = (
    Path.home() / ".cache" / "submitter-bench" / f"mlflow-sklearn-{sklearn.__version__}"
)


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """How to start one server and talk to it."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    url: str
    bodies: list[str]  # one JSON body per sample row
    parse: Callable[[dict[str, Any]], tuple[list[Any], list[list[float]] | None]]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    concurrency: int
    figures: dict[str, Any]
    profiled: bool = False

    @property
    def rps(self) -> float:
        return float(self.figures["rps"])


def rows_payload(rows: list[dict[str, Any]]) -> list[str]:
    return [json.dumps({"rows": [row]}) for row in rows]


def split_payload(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    return [
        json.dumps({"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}})
        for row in rows
    ]


def parse_with_probabilities(body: dict[str, Any]) -> tuple[list[Any], list[list[float]]]:
    return body["predictions"], body["probabilities"]


def parse_predictions_only(body: dict[str, Any]) -> tuple[list[Any], None]:
    return body["predictions"], None


# --------------------------------------------------------------------------- model


@dataclass
class Model:
    file: Path  # the skops file all three servers load
    trained: Any  # the TrainResult: register_version needs its schema and metrics
    columns: list[str]
    rows: list[dict[str, Any]]  # sample rows, as clients send them
    predictions: list[Any]
    probabilities: list[list[float]]


def train_model(data: Path, work: Path) -> Model:
    """Train the pipeline in this process, save it, compute the expected answers."""
    from submitter.ml import check_rows, save, train

    frame = pd.read_csv(data)
    started = time.monotonic()
    result = train(frame, TARGET, models=["lr"], folds=2, seed=0)
    log(f"trained {result.best_model} on {len(frame)} rows in {time.monotonic() - started:.1f} s")
    model_file = work / "model.skops"
    save(result.pipeline, model_file)
    sample = frame.drop(columns=[TARGET]).sample(SAMPLE_ROWS, random_state=0)
    rows = json.loads(sample.to_json(orient="records"))  # plain JSON types, as a client has
    expected_input = check_rows(result.feature_schema, rows)
    return Model(
        file=model_file,
        trained=result,
        columns=list(sample.columns),
        rows=rows,
        predictions=result.pipeline.predict(expected_input).tolist(),
        probabilities=result.pipeline.predict_proba(expected_input).tolist(),
    )


def register_model(model: Model, home: Path) -> str:
    """Register the model in an embedded home; return a viewer API key for it."""
    from submitter.config import load_settings
    from submitter.db.migrate import upgrade
    from submitter.ml.compiled import compile_pipeline
    from submitter.registry.service import register_version, set_alias
    from submitter.runtime import Runtime
    from submitter.security import Role, create_key

    result = model.trained
    settings = load_settings(home=home)
    upgrade(settings)
    runtime = Runtime(settings)
    try:
        # As a train job does: compile, parity-check on the holdout, store the .onnx too.
        compilation = compile_pipeline(
            result.pipeline, result.feature_schema, result.task, result.classes, result.X_holdout
        )
        log(f"serving: {compilation.serving}")
        version = register_version(
            runtime,
            name=MODEL_NAME,
            model_file=model.file,
            compiled=compilation.onnx,
            fields={
                "task": result.task,
                "algorithm": result.best_model,
                "metric": result.metric,
                "metrics": json.loads(
                    json.dumps({"holdout": result.holdout_metrics, "serving": compilation.serving})
                ),
                "leaderboard": json.loads(json.dumps(result.leaderboard, default=float)),
                "params": json.loads(json.dumps(result.params, default=str)),
                "feature_schema": result.feature_schema,
                "classes": [_plain(c) for c in result.classes or []],
                "target": TARGET,
            },
        )
        set_alias(runtime, MODEL_NAME, "production", version.version)
        with runtime.transaction() as session:
            _, key = create_key(session, "bench-predict", Role.viewer)
        return key
    finally:
        runtime.close()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- MLflow


def ensure_mlflow_venv(venv: Path) -> Path:
    """MLflow's own virtual environment (created once, reused); return its python."""
    python = venv / "bin" / "python"
    marker = venv / ".submitter-bench-ready"
    requirements = [
        "mlflow",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={skops.__version__}",
        "pandas",
    ]
    if marker.exists() and marker.read_text() == " ".join(requirements):
        return python
    log(f"installing MLflow into {venv} ({' '.join(requirements)}); takes a few minutes once")
    base = getattr(sys, "_base_executable", sys.executable)
    for cmd in (
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    marker.write_text(" ".join(requirements))
    return python


def save_mlflow_model(python: Path, model: Model, work: Path) -> Path:
    example = work / "mlflow-example.json"
    example.write_text(
        json.dumps(
            {"columns": model.columns, "data": [[r[c] for c in model.columns] for r in model.rows]}
        )
    )
    out = work / "mlflow-model"
    cmd = [str(python), str(BENCH_DIR / "_predict_mlflow_save.py"), str(model.file), str(example)]
    done = subprocess.run([*cmd, str(out)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"saving the MLflow model failed:\n{done.stdout}{done.stderr[-3000:]}")
    return out


# --------------------------------------------------------------------------- running


def start_and_check(server: Server, model: Model, processes: Processes) -> None:
    """Start `server`, wait until it predicts, check its answers on every sample row."""
    processes.start(server.name, server.cmd, server.env)
    headers = {"Content-Type": "application/json", **server.headers}
    with httpx.Client(headers=headers, timeout=30) as http:

        def answers() -> bool:
            try:
                response = http.post(server.url, content=server.bodies[0])
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                raise BenchError(f"{server.name} answered {response.status_code}: {response.text}")
            return True

        started = time.monotonic()
        wait_until(answers, START_TIMEOUT, f"{server.name} at {server.url}", processes)
        log(f"{server.name}: up after {time.monotonic() - started:.1f} s; checking answers")
        for i, body in enumerate(server.bodies):
            response = http.post(server.url, content=body)
            if response.status_code != 200:
                raise BenchError(f"{server.name} answered {response.status_code}: {response.text}")
            predictions, probabilities = server.parse(response.json())
            if predictions != model.predictions[i : i + 1]:
                raise BenchError(
                    f"{server.name} predicts {predictions} for sample row {i}, "
                    f"the pipeline {model.predictions[i]}"
                )
            if probabilities is not None and not np.allclose(
                probabilities, model.probabilities[i : i + 1], rtol=0, atol=PROBABILITY_TOLERANCE
            ):
                raise BenchError(
                    f"{server.name} gives probabilities {probabilities} for sample row {i}, "
                    f"the pipeline {model.probabilities[i]}"
                )


def measure(
    server: Server,
    args: argparse.Namespace,
    processes: Processes,
    work: Path,
    concurrency: int,
    py_spy_out: Path | None = None,
) -> Result:
    """Run the load generator against a started server; optionally py-spy it meanwhile."""
    spec_file = work / f"load-{server.name}-{concurrency}.json"
    result_file = work / f"result-{server.name}-{concurrency}.json"
    spec_file.write_text(
        json.dumps(
            {
                "url": server.url,
                "bodies": server.bodies,
                "headers": server.headers,
                "concurrency": concurrency,
                "seconds": args.seconds,
                "warmup_seconds": args.warmup_seconds,
            }
        )
    )
    load_cmd = [sys.executable, str(BENCH_DIR / "_predict_load.py"), str(spec_file)]
    processes.start(f"load-{server.name}", [*load_cmd, str(result_file)], dict(os.environ))
    if py_spy_out is not None:
        time.sleep(args.warmup_seconds)
        pid = processes.running[server.name].pid
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
        spy += ["--format", "raw", "--duration", str(int(args.seconds)), "--rate", "200"]
        processes.start("py-spy", [*spy, "--output", str(py_spy_out)], dict(os.environ))
    load = processes.running[f"load-{server.name}"]
    deadline = time.monotonic() + args.warmup_seconds + args.seconds + 120
    server_proc = processes.running[server.name]
    while load.poll() is None:
        if server_proc.poll() is not None:  # (py-spy may end first: not checked)
            raise BenchError(f"{server.name} exited:\n{processes.tail(server.name)}")
        if time.monotonic() > deadline:
            raise BenchError(f"the load generator against {server.name} did not finish")
        time.sleep(0.2)
    if load.returncode != 0:
        raise BenchError(f"load generator failed:\n{processes.tail(f'load-{server.name}')}")
    processes.running.pop(f"load-{server.name}")
    if py_spy_out is not None:
        spy_proc = processes.running.pop("py-spy")
        if spy_proc.wait(60) != 0:
            log(f"py-spy failed:\n{processes.tail('py-spy')}")
    figures = json.loads(result_file.read_text())
    if figures["failed"]:
        raise BenchError(
            f"{server.name}: {figures['failed']} requests failed, first: {figures['first_failure']}"
        )
    log(
        f"{server.name} x{concurrency}: {figures['rps']:.0f} req/s, "
        f"p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms (load avg {figures['loadavg_1m_before']:.2f} → "
        f"{figures['loadavg_1m_after']:.2f})"
    )
    return Result(server.name, concurrency, figures, profiled=py_spy_out is not None)


def servers(
    args: argparse.Namespace, model: Model, work: Path, key: str, mlflow_model: Path | None
) -> list[Server]:
    submitter_port, minimal_port, mlflow_port = free_port(), free_port(), free_port()
    home = work / "home"
    found: list[Server] = [
        Server(
            name="Submitter",
            cmd=[sys.executable, "-m", "submitter", "api", "--workers", str(args.workers)],
            env=clean_env(
                SUBMITTER_HOME=str(home),
                SUBMITTER_API_PORT=str(submitter_port),
                SUBMITTER_LOG_LEVEL="WARNING",
            ),
            url=f"http://127.0.0.1:{submitter_port}/api/v1/models/{MODEL_NAME}/predict",
            bodies=rows_payload(model.rows),
            parse=parse_with_probabilities,
            headers={"Authorization": f"Bearer {key}"},
        ),
        Server(
            name="minimal FastAPI",
            cmd=[
                *(sys.executable, "-m", "uvicorn", "_predict_minimal_app:app"),
                *("--workers", str(args.workers)),
                *("--port", str(minimal_port), "--no-access-log", "--log-level", "warning"),
            ],
            env=clean_env(BENCH_MODEL_PATH=str(model.file), PYTHONPATH=str(BENCH_DIR)),
            url=f"http://127.0.0.1:{minimal_port}/predict",
            bodies=rows_payload(model.rows),
            parse=parse_with_probabilities,
        ),
    ]
    if mlflow_model is not None:
        mlflow = args.mlflow_venv / "bin" / "mlflow"
        found.append(
            Server(
                name="MLflow",
                cmd=[
                    *(str(mlflow), "models", "serve", "-m", str(mlflow_model)),
                    *(
                        "--env-manager",
                        "local",
                        "-w",
                        str(args.workers),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(mlflow_port),
                    ),
                ],
                # Its venv first on PATH: the scoring server is started as `uvicorn ...`.
                env=clean_env(PATH=f"{args.mlflow_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"),
                url=f"http://127.0.0.1:{mlflow_port}/invocations",
                bodies=split_payload(model.columns, model.rows),
                parse=parse_predictions_only,
            )
        )
    return found


# --------------------------------------------------------------------------- report


def print_report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n1-row predictions, {args.seconds:g} s per run (after {args.warmup_seconds:g} s "
        f"warm-up), {args.workers} Uvicorn worker(s) per server, {os.cpu_count()} CPUs; "
        "the machine is shared, so read the load average next to each figure\n"
    )
    header = (
        f"{'server':<16} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} "
        f"{'Submitter ÷ this':>17}  {'load avg 1m':>13}"
    )
    print(header)
    print("-" * len(header))
    by_key = {(r.name, r.concurrency): r for r in results}
    for result in results:
        f = result.figures
        ours = by_key.get(("Submitter", result.concurrency))
        ratio = ours.rps / result.rps if ours and result.rps else math.nan
        mark = "  (py-spy attached)" if result.profiled else ""
        print(
            f"{result.name:<16} {result.concurrency:>5} {result.rps:>8.0f} {f['p50_ms']:>8.1f} "
            f"{f['p99_ms']:>8.1f} {f['requests']:>9} {ratio:>17.2f}  "
            f"{f['loadavg_1m_before']:>5.2f} → {f['loadavg_1m_after']:<5.2f}{mark}"
        )
    print()
    for line in goal_lines(by_key):
        print(line)


def goal_lines(by_key: dict[tuple[str, int], Result]) -> list[str]:
    """Each goal of issue 14 with its measured figure and met / NOT MET."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    ours = by_key.get(("Submitter", 32))
    for baseline, goal in (("minimal FastAPI", GOAL_VS_MINIMAL), ("MLflow", GOAL_VS_MLFLOW)):
        other = by_key.get((baseline, 32))
        if ours and other:
            ratio = ours.rps / other.rps
            lines.append(
                f"goal at 32 connections: Submitter req/s >= {goal:g}x {baseline}: "
                f"{ratio:.2f}x  {verdict(ratio >= goal)}"
            )
    minimal = by_key.get(("minimal FastAPI", 32))
    if ours and minimal:
        a, b = ours.figures["p99_ms"], minimal.figures["p99_ms"]
        lines.append(
            f"goal at 32 connections: Submitter p99 <= minimal FastAPI's: {a:.1f} ms vs "
            f"{b:.1f} ms  {verdict(a <= b)}"
        )
    ours1, minimal1 = by_key.get(("Submitter", 1)), by_key.get(("minimal FastAPI", 1))
    if ours1 and minimal1:
        ratio = ours1.figures["p50_ms"] / minimal1.figures["p50_ms"]
        lines.append(
            f"goal at 1 connection: Submitter p50 <= {GOAL_P50_VS_MINIMAL:g}x minimal FastAPI's: "
            f"{ratio:.2f}x ({ours1.figures['p50_ms']:.2f} vs {minimal1.figures['p50_ms']:.2f} ms)"
            f"  {verdict(ratio <= GOAL_P50_VS_MINIMAL)}"
        )
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        default=None,
        help="concurrent connections (repeatable; default: 1, 8 and 32)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="Uvicorn worker processes, the same per server"
    )
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="credit CSV")
    parser.add_argument("--mlflow-venv", type=Path, default=DEFAULT_MLFLOW_VENV)
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow baseline")
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="OUT", help="profile Submitter's API"
    )
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or list(CONCURRENCIES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        log(f"FAILED: no data at {args.data} (give --data)")
        return 1
    # Ctrl+C (even with SIGINT ignored, as `cmd &` does) and SIGTERM unwind to the finally.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # This process registers into its own temp home only: no SUBMITTER_* from outside.
    for name in [n for n in os.environ if n.startswith("SUBMITTER_")]:
        del os.environ[name]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="submitter-bench-predict-") as tmp:
        work = Path(tmp)
        processes = Processes(work)
        try:
            model = train_model(args.data, work)
            key = register_model(model, work / "home")
            mlflow_model = None
            if not args.no_mlflow:
                python = ensure_mlflow_venv(args.mlflow_venv)
                mlflow_model = save_mlflow_model(python, model, work)
            for server in servers(args, model, work, key, mlflow_model):
                start_and_check(server, model, processes)
                for concurrency in args.concurrency:
                    profile = (
                        args.py_spy
                        if server.name == "Submitter" and concurrency == max(args.concurrency)
                        else None
                    )
                    results.append(measure(server, args, processes, work, concurrency, profile))
                processes.stop(server.name)
        except BenchError as error:
            log(f"FAILED: {error}")
            return 1
        except KeyboardInterrupt:
            log("interrupted; stopping servers and cleaning up")
            return 130
        finally:
            processes.stop_all()
        if results:
            print_report(results, args)
        if args.py_spy is not None:
            print(f"\npy-spy profile of the Submitter API (collapsed stacks): {args.py_spy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
