"""`submitter datasets`: upload, list, show, preview, aggregate, delete (over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.groups import command_group
from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

app = command_group("Datasets: CSV or Parquet, versioned by name.")
console = Console()
err = Console(stderr=True)


def _show(dataset: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(dataset, indent=2))
        return
    console.print(
        f"[bold]{dataset['name']}@{dataset['version']}[/bold]  id {dataset['id']}  "
        f"{dataset['row_count']:,} rows  {dataset['byte_size']:,} bytes parquet  "
        f"(uploaded {dataset['format']}, {dataset['upload_bytes']:,} bytes, "
        f"sha256 {dataset['sha256'][:12]}…)"
    )
    table = Table("column", "dtype")
    for column in dataset["columns"]:
        table.add_row(column["name"], column["dtype"])
    console.print(table)


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option(help="Dataset name; an existing name gets a new version.")],
    file_format: Annotated[str | None, typer.Option("--format", help="csv or parquet")] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Upload a CSV or Parquet file."""
    with Client() as client, console.status(f"uploading {path} ..."):
        try:
            dataset = client.upload_dataset(
                path, name, file_format=file_format, delimiter=delimiter
            )
        except ApiError as error:
            raise fail(error) from None
    _show(dataset, as_json)


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List datasets and their versions."""
    with Client() as client:
        try:
            page = client.datasets(name=name, limit=1000)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(page, indent=2))
        return
    table = Table("name", "version", "id", "rows", "columns", "created", title=f"{page['total']}")
    for d in page["items"]:
        table.add_row(
            d["name"],
            str(d["version"]),
            d["id"],
            f"{d['row_count']:,}",
            str(len(d["columns"])),
            d["created_at"][:19],
        )
    console.print(table)


@app.command()
def show(ref: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a dataset (id, name or name@version) and its columns."""
    with Client() as client:
        try:
            _show(client.dataset(ref), as_json)
        except ApiError as error:
            raise fail(error) from None


@app.command()
def preview(
    ref: str,
    limit: int = 10,
    columns: Annotated[
        str | None, typer.Option(help="Only these columns, comma-separated.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The first rows of a dataset: the columns that fit the terminal, and how many did not."""
    with Client() as client:
        try:
            rows = client.preview(ref, limit)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    names: list[str] = rows["columns"]
    cells = [["" if v is None else str(v) for v in row] for row in rows["rows"]]
    wanted = [n for n in columns.split(",") if n] if columns else names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        err.print(
            f"[red]--columns[/red]: no column {', '.join(unknown)}; columns: {', '.join(names)}"
        )
        raise typer.Exit(2)
    shown = _fitting([names.index(n) for n in wanted], names, cells, console.width)
    table = Table(*(names[i] for i in shown))
    for row in cells:
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    left = len(wanted) - len(shown)
    if left:
        console.print(
            f"{left} more column{'s' * (left > 1)} not shown: pick with --columns, or --json"
        )


def _fitting(indexes: list[int], names: list[str], cells: list[list[str]], width: int) -> list[int]:
    """The first columns whose widths (header or widest value, 24 at most, plus a table
    border of 3) add up to the terminal's width; at least one."""
    shown: list[int] = []
    used = 1
    for index in indexes:
        need = min(24, max([len(names[index]), *(len(row[index]) for row in cells)])) + 3
        if shown and used + need > width:
            break
        shown.append(index)
        used += need
    return shown


@app.command()
def aggregate(
    ref: str,
    fn: Annotated[str, typer.Option(help="count, mean, sum, min, max, nunique")],
    column: Annotated[str | None, typer.Option()] = None,
    where: Annotated[list[str] | None, typer.Option(help="COLUMN:VALUE; repeat to AND.")] = None,
    group_by: Annotated[str | None, typer.Option()] = None,
) -> None:
    """E.g. `submitter datasets aggregate credit --fn mean --column AGE --where SEX:1`."""
    filters = {}
    for item in where or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            err.print(f"[red]--where[/red] takes COLUMN:VALUE, e.g. SEX:1 (got {item!r})")
            raise typer.Exit(2)
        filters[key] = value
    with Client() as client:
        try:
            result = client.aggregate(ref, fn, column, where=filters, group_by=group_by)
        except ApiError as error:
            raise fail(error) from None
    print(json.dumps(result, indent=2))


@app.command()
def delete(ref: str) -> None:
    """Delete one version (refused while a queued or running job reads it)."""
    with Client() as client:
        try:
            client.delete_dataset(ref)
        except ApiError as error:
            raise fail(error) from None
    console.print(f"deleted {ref}")
