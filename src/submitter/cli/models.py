"""`submitter models`: the registry over HTTP — list, show, promote."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

app = typer.Typer(help="Model registry: versions, metrics, aliases.", no_args_is_help=True)
console = Console()


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered models with their latest version and aliases."""
    with Client() as client:
        try:
            models = client.models()
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(models, indent=2))
        return
    table = Table("name", "latest", "aliases", "created")
    for model in models:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(model["aliases"].items()))
        table.add_row(
            model["name"], str(model["latest_version"]), aliases, model["created_at"][:19]
        )
    console.print(table)


@app.command()
def show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a model's versions with their metrics."""
    with Client() as client:
        try:
            versions = client.model_versions(name)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(versions, indent=2))
        return
    table = Table("version", "algorithm", "metric", "CV", "holdout", "dataset", "job", title=name)
    for v in versions:
        metric = v["metric"]
        table.add_row(
            str(v["version"]),
            v["algorithm"],
            metric,
            _number(v["metrics"].get("cv", {}).get(metric)),
            _number(v["metrics"].get("holdout", {}).get(metric)),
            (v["dataset_id"] or "")[:8],
            (v["job_id"] or "")[:8],
        )
    console.print(table)


@app.command()
def promote(
    name: str,
    version: int,
    alias: Annotated[str, typer.Option(help="The alias to point at VERSION.")] = "production",
) -> None:
    """Point an alias (default `production`) at a version; predictions follow at once."""
    with Client() as client:
        try:
            client.promote(name, version, alias)
        except ApiError as error:
            raise fail(error) from None
    console.print(f"{name}: {alias} → v{version}")
