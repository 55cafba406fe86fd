"""`submitter demo`: the main job on the embedded default, in a temporary home.

Starts `submitter up` in a throwaway folder, uploads a dataset that ships with
scikit-learn (no download), trains with model comparison and 5-fold CV behind a progress
bar, promotes the best version to `production`, predicts a few rows, prints the
leaderboard and the predictions, and stops (or, with --keep, leaves the stack running).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from submitter.client import Client, JobFailed

console = Console()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo(
    keep: Annotated[bool, typer.Option(help="Leave the stack running at the end.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Give up training after this many seconds.")
    ] = 110.0,
) -> None:
    """Start the stack in a temporary home: upload, train, promote, predict; then stop."""
    home = Path(tempfile.mkdtemp(prefix="submitter-demo-"))
    port = _free_port()
    key = "sk_" + secrets.token_urlsafe(32)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")},
        "SUBMITTER_HOME": str(home),
        "SUBMITTER_API_PORT": str(port),
        "SUBMITTER_ADMIN_KEY": key,
        "SUBMITTER_LOG_FORMAT": "json",
    }
    log_path = home / "stack.log"
    console.print(f"[bold]Submitter demo[/bold] · home {home} · http://127.0.0.1:{port}")
    with log_path.open("wb") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "submitter", "up", "--concurrency=2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Client(url=f"http://127.0.0.1:{port}", api_key=key)
    code = 1  # until the main job says otherwise: a failed demo keeps its home and log
    try:
        with console.status("starting API, worker and beat ..."):
            deadline = time.monotonic() + 60
            while not client.ready():
                if stack.poll() is not None or time.monotonic() > deadline:
                    console.print(f"[red]the stack did not start; see {log_path}[/red]")
                    raise typer.Exit(1)
                time.sleep(0.3)
        code = _main_job(client, home, timeout)
        if keep:
            console.print(
                f"stack left running: web console http://127.0.0.1:{port}/ui (sign in with "
                f"the API key) · docs http://127.0.0.1:{port}/docs · API key {key} · "
                f"stop with: kill {stack.pid}"
            )
            return
    finally:
        client.close()
        if not keep:
            os.killpg(stack.pid, signal.SIGTERM)
            try:
                stack.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait(10)
            if code == 0:  # a failed demo keeps its home: the log is in it
                shutil.rmtree(home, ignore_errors=True)
            else:
                console.print(f"the demo's files and log are kept in {home}")
    raise typer.Exit(code)


def _main_job(client: Client, home: Path, timeout: float) -> int:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    csv = home / "breast_cancer.csv"
    frame.to_csv(csv, index=False)
    dataset = client.upload_dataset(csv, "breast-cancer")
    console.print(
        f"uploaded [bold]{dataset['name']}@{dataset['version']}[/bold]: "
        f"{dataset['row_count']} rows, {len(dataset['columns'])} columns"
    )
    handle = client.train("breast-cancer", "diagnosis", "breast-cancer", folds=5)
    try:
        job = handle.wait(progress=True, timeout=timeout)
    except (JobFailed, TimeoutError) as error:
        console.print(f"[red]training did not succeed[/red]: {error}")
        return 1
    result = job["result"]
    metric = result["metric"]
    table = Table(title=f"leaderboard ({metric}, 5-fold CV)")
    for column in ("model", metric, "Accuracy", "F1", "fit_seconds"):
        table.add_column(column)
    for row in result["leaderboard"]:
        table.add_row(
            row["model"],
            *(
                f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                for c in (metric, "Accuracy", "F1", "fit_seconds")
            ),
        )
    console.print(table)
    version = result["version"]
    client.promote("breast-cancer", version)
    console.print(
        f"registered breast-cancer v{version} ({result['best_model']}), "
        f"holdout {metric} {result['holdout'].get(metric, float('nan')):.4f}; "
        "alias production → v{version}".replace("{version}", str(version))
    )
    sample = frame.drop(columns=["diagnosis"]).sample(5, random_state=1)
    predictions = client.predict("breast-cancer", sample)
    shown = Table("row", "actual", "predicted", "p(malignant)", title="predictions (production)")
    for index, row in predictions.iterrows():
        shown.add_row(
            str(index),
            frame.loc[index, "diagnosis"],
            row["prediction"],
            f"{row['probability_malignant']:.3f}",
        )
    console.print(shown)
    return 0
