"""`submitter workers` and `submitter tasks`: what runs the platform (over HTTP)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

console = Console()

STATE_STYLE = {
    "online": "green",
    "offline": "red",
    "stopped": "dim",
    "ok": "green",
    "failing": "red",
    "late": "yellow",
    "never": "yellow",
}


def _fetch(method: str) -> list[dict[str, Any]]:
    with Client() as client:
        try:
            items: list[dict[str, Any]] = getattr(client, method)()
        except ApiError as error:
            raise fail(error) from None
    return items


def workers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List workers: online, offline (silent for about a job lease) or stopped."""
    items = _fetch("workers")
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table("name", "state", "pid", "queues", "pool", "last seen", "running jobs")
    for w in items:
        table.add_row(
            w["name"],
            f"[{STATE_STYLE.get(w['state'], '')}]{w['state']}[/]",
            str(w["pid"]),
            ",".join(w["queues"]),
            str(w["concurrency"]),
            w["last_seen_at"][:19],
            " ".join(w["running_jobs"]),
        )
    console.print(table)


def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Beat's built-in tasks: ok, failing, late (is beat running?) or never run."""
    items = _fetch("tasks")
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table("task", "state", "every", "last run", "took", "runs", "failures", "error")
    for t in items:
        took = t["last_duration_seconds"]
        table.add_row(
            t["name"],
            f"[{STATE_STYLE.get(t['state'], '')}]{t['state']}[/]",
            f"{t['interval_seconds']:g} s",
            (t["last_started_at"] or "-")[:19],
            "-" if took is None else f"{took:.3f} s",
            str(t["runs"]),
            str(t["failures"]),
            t["last_error"] or "",
        )
    console.print(table)
