"""`submitter models`: the registry over HTTP — list, show, promote, predict."""

from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.groups import command_group
from submitter.cli.jobs import fail, number, parse_spec
from submitter.client import ApiError, Client

app = command_group("Model registry: versions, metrics, aliases.")
console = Console()
err = Console(stderr=True)


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
def show(
    name: str,
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Download the version's plots (--version, else the latest) into this "
            "folder and print their paths instead of the table.",
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a model's versions with their metrics, or download a version's plots."""
    if plots is not None:
        _download_plots(name, version, plots, as_json)
        return
    with Client() as client:
        try:
            versions = client.model_versions(name)
        except ApiError as error:
            raise fail(error) from None
    if version is not None:
        versions = [v for v in versions if v["version"] == version]
        if not versions:
            err.print(f"[red]model {name!r} has no version {version}[/red]")
            raise typer.Exit(1)
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
            number(v["metrics"].get("cv", {}).get(metric)),
            number(v["metrics"].get("holdout", {}).get(metric)),
            (v["dataset_id"] or "")[:8],
            (v["job_id"] or "")[:8],
        )
    console.print(table)


def _download_plots(name: str, version: int | None, folder: Path, as_json: bool) -> None:
    """The plots as files, one path a line (or a JSON list), for scripts and for people."""
    with Client() as client:
        try:
            paths = client.download_plots(name, folder, version=version)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for path in paths:
            print(path)
    if not paths:
        which = f"version {version}" if version is not None else "its latest version"
        err.print(
            f"{name} {which} has no plots: trained before plots were made, or its "
            "training job has not finished yet"
        )


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


@app.command()
def predict(
    name: str,
    rows: Annotated[
        str | None, typer.Option(help='Rows as JSON: [{"AGE": 24, "SEX": 2}, ...].')
    ] = None,
    csv: Annotated[
        Path | None, typer.Option(help="A CSV file with a header; every row is predicted.")
    ] = None,
    version: Annotated[int | None, typer.Option(help="This version.")] = None,
    alias: Annotated[str | None, typer.Option(help="The version this alias points at.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Predict rows with a model: `production`, else the latest, unless --version/--alias."""
    if (rows is None) == (csv is None):
        err.print("[red]give --rows JSON or --csv FILE[/red]")
        raise typer.Exit(2)
    records = _csv_records(csv) if csv is not None else parse_spec(rows or "[]", "--rows")
    with Client() as client:
        try:
            result = client.predict(name, records, version=version, alias=alias)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    classes = [str(c) for c in result.get("classes") or []]
    table = Table("row", "prediction", *(f"p({c})" for c in classes))
    table.title = f"{result['model']} v{result['version']}"
    probabilities = result.get("probabilities") or [[] for _ in result["predictions"]]
    for index, (label, row) in enumerate(zip(result["predictions"], probabilities, strict=True)):
        table.add_row(str(index), str(label), *(f"{p:.3f}" for p in row))
    console.print(table)


def _csv_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with numbers as numbers and empty cells as missing, as the API
    takes them (a model trained on a number column refuses the text "24")."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [{k: _cell(v) for k, v in row.items()} for row in csv_module.DictReader(handle)]


def _cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
