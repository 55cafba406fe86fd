"""`submitter clusters`: the configured SLURM clusters, and a live check of one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.groups import command_group
from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

app = command_group("SLURM clusters (configured in the YAML file).")
console = Console()


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the configured clusters."""
    with Client() as client:
        try:
            clusters = client.clusters()
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(clusters, indent=2))
        return
    table = Table("name", "transport", "where", "workdir", "partition", "accounting")
    for c in clusters:
        where = f"{c['user']}@{c['host']}:{c['port']}" if c["transport"] == "ssh" else "this host"
        table.add_row(
            c["name"], c["transport"], where, c["workdir"], c["partition"] or "", c["accounting"]
        )
    console.print(table)


@app.command()
def check(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Connect to a cluster (from the API server) and report SLURM, partitions and Python."""
    with Client() as client:
        try:
            report = client.check_cluster(name)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(f"[green]✓[/green] {report['cluster']}: {report['slurm_version']}")
    console.print(f"  workdir:    {report['workdir']}")
    console.print(f"  accounting: {report['accounting']}")
    console.print(f"  python:     {report['python'] or report['python_error']}")
    table = Table("partition", "default", "state", "nodes", "cpus/node", "MB/node", "time limit")
    for p in report["partitions"]:
        table.add_row(
            p["name"],
            "yes" if p["default"] else "",
            p["available"],
            p["nodes"],
            p["cpus_per_node"],
            p["memory_mb_per_node"],
            p["time_limit"],
        )
    console.print(table)
