"""`submitter demo`: the whole stack on the embedded default, in a temporary home.

Starts `submitter up` in a throwaway folder, submits a small pipeline of echo jobs with
dependencies, shows them run, and stops everything. (The ML issue replaces the jobs with
a real training run.)
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from submitter.client import TERMINAL_STATES, Client

console = Console()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("job", "id", "depends on", "state", "progress", "attempts")
    for job in jobs:
        progress = "" if job["progress"] is None else f"{job['progress']:.0%}"
        table.add_row(
            job["spec"]["message"],
            job["id"][:8],
            ", ".join(d[:8] for d in job["depends_on"]),
            job["state"] + (f" ({job['phase']})" if job["phase"] else ""),
            progress,
            str(job["attempts"]),
        )
    return table


def demo(
    keep: Annotated[bool, typer.Option(help="Leave the stack running at the end.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 120.0,
) -> None:
    """Start the stack in a temporary home, run a small job pipeline, show it, stop."""
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
    code = 0
    try:
        with console.status("starting API, worker and beat ..."):
            deadline = time.monotonic() + 60
            while not client.ready():
                if stack.poll() is not None or time.monotonic() > deadline:
                    console.print(f"[red]the stack did not start; see {log_path}[/red]")
                    raise typer.Exit(1)
                time.sleep(0.3)
        prepare = client.submit("echo", {"message": "prepare data", "sleep_seconds": 1})
        train = client.submit(
            "echo", {"message": "train model", "sleep_seconds": 3}, depends_on=[prepare["id"]]
        )
        report = client.submit(
            "echo", {"message": "write report"}, depends_on=[prepare["id"], train["id"]]
        )
        ids = [prepare["id"], train["id"], report["id"]]
        end = time.monotonic() + timeout
        with Live(_table([client.job(i) for i in ids]), console=console) as live:
            while True:
                jobs = [client.job(i) for i in ids]
                live.update(_table(jobs))
                if all(j["state"] in TERMINAL_STATES for j in jobs):
                    break
                if time.monotonic() > end:
                    console.print("[red]the demo timed out[/red]")
                    code = 1
                    break
                time.sleep(0.3)
        if code == 0 and all(j["state"] == "succeeded" for j in jobs):
            console.print("[green]all jobs succeeded[/green]")
        else:
            code = 1
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            console.print(f"[red]the demo failed[/red]; last lines of {log_path}:", *tail, sep="\n")
        if keep:
            console.print(
                f"stack left running: docs http://127.0.0.1:{port}/docs · API key {key} · "
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
    raise typer.Exit(code)
