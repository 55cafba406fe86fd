"""CLI start-up: how long `submitter --help` and a client command take, next to the floor.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--before REV]

Each command is run `--runs` times as a new process; the median wall time is printed. The
baseline, measured in the same run, is the framework's floor: a one-command Typer app
with one typed option printing its help (Python + Typer + Click + pydantic, which Typer
uses to convert option values). `--before REV` also times the same commands on
an older commit of this repository (a temporary worktree put first on PYTHONPATH), so a
change shows its before and after in one run. Goal (issue 12): `--help` and client
commands under 0.4 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: A one-command Typer app with one typed option: Typer converts option values through
#: pydantic (typer._adapters, about 0.15 s here), so every command with options pays that.
FLOOR = (
    "import typer\napp = typer.Typer()\n"
    "@app.command()\ndef main(limit: int = 1) -> None: ...\napp()"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median_seconds(command: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", help="A commit to time as well, e.g. e92d1e4.")
    args = parser.parse_args()
    # A client command against a port where nothing listens: start-up plus one refused
    # connection, the path a user meets first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env["SUBMITTER_URL"] = f"http://127.0.0.1:{_free_port()}"
    env["SUBMITTER_API_KEY"] = "sk_bench"
    commands = {
        "submitter --help": ["--help"],
        "submitter jobs list --help": ["jobs", "list", "--help"],
        "submitter jobs list (no API)": ["jobs", "list"],
    }
    python = sys.executable
    floor = median_seconds([python, "-c", FLOOR, "--help"], args.runs, env)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.runs} runs each; median wall time")
    print(f"{'baseline: Typer app, one option, --help':44} {floor:6.3f} s")
    versions = [("now", env)]
    worktree = None
    if args.before:
        worktree = Path(tempfile.mkdtemp(prefix="submitter-before-"))
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "worktree",
                "add",
                "-q",
                "--detach",
                str(worktree),
                args.before,
            ],
            check=True,
        )
        versions.insert(0, (args.before, {**env, "PYTHONPATH": str(worktree / "src")}))
    try:
        for label, version_env in versions:
            for name, argv in commands.items():
                seconds = median_seconds([python, "-m", "submitter", *argv], args.runs, version_env)
                print(f"{name + ' [' + label + ']':44} {seconds:6.3f} s  ({seconds / floor:.2f}x)")
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )


if __name__ == "__main__":
    main()
