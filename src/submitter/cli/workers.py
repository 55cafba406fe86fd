"""`submitter workers`: the worker processes and what runs on them (over HTTP)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

console = Console()

STATE_STYLE = {"online": "green", "offline": "red", "stopped": "dim"}


def workers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List workers: online, offline (silent for about a job lease) or stopped."""
    with Client() as client:
        try:
            items = client.workers()
        except ApiError as error:
            raise fail(error) from None
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
