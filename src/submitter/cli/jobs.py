"""`submitter jobs`: client commands over HTTP (SUBMITTER_URL, SUBMITTER_API_KEY)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from submitter.cli.groups import command_group
from submitter.client import TERMINAL_STATES, ApiError, Client

app = command_group("Submit and follow jobs (over HTTP).")
console = Console()
err = Console(stderr=True)

#: Characters of a job id shown in tables; the API takes any unique prefix of 8 or more.
SHORT_ID = 12

STATE_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _client() -> Client:
    return Client()


def parse_spec(spec: str, option: str = "--spec") -> Any:
    """An option's JSON (`--spec`, `--rows`); exit 2 (usage error) when it is not JSON."""
    try:
        return json.loads(spec)
    except json.JSONDecodeError as error:
        err.print(f"[red]{option} is not valid JSON[/red]: {error}")
        raise typer.Exit(2) from None


def fail(error: ApiError) -> typer.Exit:
    """Print an API error (one line per field for a 422); the Exit to raise."""
    detail = error.detail
    if isinstance(detail, list):  # a 422: one line per field
        for item in detail:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            err.print(f"[red]{loc or 'request'}[/red]: {item.get('msg')}")
    else:
        err.print(f"[red]error {error.status_code}[/red]: {detail}")
    return typer.Exit(1)


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "kind",
        "state",
        "phase",
        "progress",
        "message",
        "attempts",
        "external_id",
        "depends_on",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    ):
        value = job.get(key)
        if value in (None, [], ""):
            continue
        if key == "state":
            value = f"[{STATE_STYLE.get(value, '')}]{value}[/]"
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)
    result = job.get("result")
    if result is None:
        return
    if job.get("kind") == "train" and isinstance(result, dict) and "leaderboard" in result:
        _print_training(job["id"], result)
    else:
        _print_result(result)
    console.print(f"[dim]all of it: submitter jobs show {job['id'][:SHORT_ID]} --json[/dim]")


def number(value: Any) -> str:
    """A metric for a table: 4 decimals, blank when missing."""
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


def _print_training(job_id: str, result: dict[str, Any]) -> None:
    """The leaderboard as a table, then what was registered and where the files are."""
    metric = result["metric"]
    task_metrics = (
        ("Accuracy", "AUC", "F1")
        if result.get("task") == "classification"
        else ("R2", "RMSE", "MAE")
    )
    columns = [metric, *(m for m in task_metrics if m != metric), "fit_seconds"]
    table = Table(title=f"leaderboard ({metric}, cross-validated)")
    table.add_column("model")
    for name in columns:
        table.add_column(name, justify="right")
    for row in result["leaderboard"]:
        table.add_row(row["model"], *(number(row.get(name)) for name in columns))
    console.print(table)
    holdout = result.get("holdout") or {}
    console.print(
        f"registered [bold]{result['model_name']} v{result['version']}[/bold] "
        f"({result['best_model']}); holdout {metric} {number(holdout.get(metric))}"
    )
    for key in ("skipped", "failed"):
        if result.get(key):
            console.print(f"{key}: {result[key]}")
    console.print(f"artifacts: submitter jobs artifacts {job_id[:SHORT_ID]}")
    if result.get("plots"):
        console.print(
            f"plots: submitter models show {result['model_name']} --version {result['version']}"
            " --plots DIR"
        )


def _print_result(result: Any) -> None:
    """A result for people: scalars as lines, a list of records as a table (20 rows)."""
    if not isinstance(result, dict):
        console.print(Text(_short(result)))
        return
    table = Table(show_header=False, box=None, title="result", title_justify="left")
    records: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            records.append((key, value))
        else:
            table.add_row(f"[bold]{key}[/bold]", Text(_short(value)))
    console.print(table)
    for key, rows in records:
        names = list(dict.fromkeys(name for row in rows for name in row))[:8]
        shown = Table(*names, title=f"{key} ({len(rows)})")
        for row in rows[:20]:
            shown.add_row(*(Text(_short(row.get(name), 40)) for name in names))
        console.print(shown)


def _short(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def submit(
    kind: str,
    spec: Annotated[str, typer.Option(help="The spec as JSON.")] = "{}",
    depends_on: Annotated[list[str] | None, typer.Option(help="Job id; repeat for more.")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Submit a job of KIND, e.g. `submitter jobs submit echo --spec '{"message": "hi"}'`."""
    spec_value = parse_spec(spec)
    with _client() as client:
        try:
            job = client.submit(
                kind, spec_value, depends_on=depends_on, idempotency_key=idempotency_key
            )
        except ApiError as error:
            raise fail(error) from None
        if not wait:
            if as_json:
                _print_job(job, True)
            else:
                print(job["id"])
            return
        final = _watch(client, job["id"])
    _print_job(final, as_json)
    raise typer.Exit(0 if final["state"] == "succeeded" else 1)


@app.command("submit-many")
def submit_many(
    file: Annotated[str, typer.Argument(help="JSON lines, one job request each; - for stdin.")],
) -> None:
    """Submit many jobs at once, all or none: one request per line (`{"kind": "echo",
    "spec": {...}, "depends_on": ["#0"]}`, `#i` naming the job on the i-th line, counted
    from 0, of the same file); prints the ids in order. Errors name the line."""
    text = sys.stdin.read() if file == "-" else _read_file(file)
    requests: list[Any] = []
    lines: list[int] = []  # line number (from 1) of each request
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            requests.append(json.loads(line))
        except json.JSONDecodeError as error:
            err.print(f"[red]line {number}[/red]: not valid JSON: {error}")
            raise typer.Exit(2) from None
        lines.append(number)
    if not requests:
        err.print("[red]no job requests[/red] (one JSON object per line)")
        raise typer.Exit(2)
    with _client() as client:
        try:
            jobs = client.submit_many(requests)
        except ApiError as error:
            raise fail(_by_line(error, lines)) from None
    for job in jobs:
        print(job["id"])


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        err.print(f"[red]cannot read {path}[/red]: {error.strerror or error}")
        raise typer.Exit(2) from None


def _by_line(error: ApiError, lines: list[int]) -> ApiError:
    """A batch's 422 with `jobs.<index>` given as `line N` of the file."""
    if not isinstance(error.detail, list):
        return error
    detail = []
    for item in error.detail:
        loc = list(item.get("loc", []))
        index = loc[2] if loc[:2] == ["body", "jobs"] and len(loc) > 2 else None
        if isinstance(index, int) and 0 <= index < len(lines):
            loc = ["body", f"line {lines[index]}", *loc[3:]]
        detail.append({**item, "loc": loc})
    return ApiError(error.status_code, detail)


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str | None, typer.Option()] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Only jobs of this schedule (id or name).")
    ] = None,
    limit: int = 20,
    offset: int = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs, newest first."""
    with _client() as client:
        try:
            page = client.jobs(
                state=state, kind=kind, schedule=schedule, limit=limit, offset=offset
            )
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(page, indent=2))
        return
    table = Table(title=f"{page['total']} jobs (ids shortened; any 8+ characters of one do)")
    table.add_column("id", no_wrap=True)
    for name in ("kind", "state", "phase", "progress", "created"):
        table.add_column(name)
    for job in page["items"]:
        progress = "" if job["progress"] is None else f"{job['progress']:.0%}"
        table.add_row(
            job["id"][:SHORT_ID],
            job["kind"],
            f"[{STATE_STYLE.get(job['state'], '')}]{job['state']}[/]",
            job["phase"] or "",
            progress,
            job["created_at"][:19],
        )
    console.print(table)


@app.command()
def show(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job."""
    with _client() as client:
        try:
            _print_job(client.job(job_id), as_json)
        except ApiError as error:
            raise fail(error) from None


@app.command()
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
) -> None:
    """Print a job's log."""
    after = 0
    with _client() as client:
        try:
            while True:
                for line in client.logs(job_id, after=after):
                    after = line["id"]
                    _print_log_line(line)
                if not follow or client.job(job_id)["state"] in TERMINAL_STATES:
                    if follow:  # lines written just before the end
                        for line in client.logs(job_id, after=after):
                            _print_log_line(line)
                    return
                time.sleep(1.0)
        except ApiError as error:
            raise fail(error) from None


def _print_log_line(line: dict[str, Any], out: Console = console) -> None:
    """Time dimmed, level, message as written: a message's own brackets are not markup."""
    text = Text.assemble((line["at"][:23], "dim"), f" {line['level']:7} ", line["message"])
    out.print(text, highlight=False, soft_wrap=True)


@app.command()
def sweep(
    job_id: str,
    best_by: Annotated[
        str | None,
        typer.Option(
            "--best-by",
            help="Sort by this result value, or else this metric's last value (`-name`: "
            "lowest first).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A sweep's children side by side: parameters, state, result values and last
    metric values."""
    with _client() as client:
        try:
            table = client.sweep(job_id, best_by)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        console.print_json(json.dumps(table))
        return
    shown = [c for c in table["columns"] if not best_by or c != best_by.lstrip("-")][:4]
    if best_by:
        shown.insert(0, best_by.lstrip("-"))
    grid = Table(title=f"sweep {table['sweep_id'][:SHORT_ID]}: {table['message'] or ''}")
    for name in ["job", *table["parameters"], "state", *shown]:
        grid.add_column(name)
    for row in table["rows"]:
        best = row["job_id"] == table["best"]
        grid.add_row(
            ("* " if best else "") + row["job_id"][:SHORT_ID],
            *(str(row["params"].get(p, "")) for p in table["parameters"]),
            Text(row["state"], style=STATE_STYLE.get(row["state"], "")),
            *(_number(row["values"].get(c, row.get("metrics", {}).get(c))) for c in shown),
        )
    console.print(grid)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    with _client() as client:
        try:
            job = client.cancel(job_id)
        except ApiError as error:
            raise fail(error) from None
    console.print(f"{job['id']}: {job['state']}")


@app.command()
def watch(job_id: str) -> None:
    """Follow a job live until it ends: a progress bar and its log lines as they come
    (both on stderr), then the job; exit 1 unless it succeeded."""
    with _client() as client:
        try:
            job = _watch(client, job_id)
        except ApiError as error:
            raise fail(error) from None
    _print_job(job, False)
    raise typer.Exit(0 if job["state"] == "succeeded" else 1)


def _watch(client: Client, job_id: str) -> dict[str, Any]:
    """Follow the job's event stream: the bar moves with each `state` event and each log
    line is printed above it, on stderr, so stdout carries only the result (`--json`)."""
    with Progress(
        TextColumn("[bold]{task.fields[kind]}[/bold] {task.fields[job_id]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("queued", total=1.0, kind="", job_id=job_id[:8])

        def update(job: dict[str, Any]) -> None:
            label = job["state"] + (f" · {job['phase']}" if job.get("phase") else "")
            if job.get("message"):
                label += f" · {job['message'][:60]}"
            done = job["progress"] or (1.0 if job["state"] == "succeeded" else 0.0)
            progress.update(task, completed=done, description=label, kind=job["kind"])

        def show(line: dict[str, Any]) -> None:
            _print_log_line(line, progress.console)

        return client.wait(job_id, poll=0.5, on_update=update, on_log=show)


@app.command()
def artifacts(job_id: str) -> None:
    """List the files a job produced."""
    with _client() as client:
        try:
            items = client.artifacts(job_id)
        except ApiError as error:
            raise fail(error) from None
    table = Table("name", "size", "sha256")
    for item in items:
        table.add_row(item["name"], f"{item['size']:,}", item["sha256"][:16] + "…")
    console.print(table)


@app.command()
def download(
    job_id: str,
    name: Annotated[str | None, typer.Argument(help="Artifact name; all when omitted.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder or file.")] = Path("."),
) -> None:
    """Download one artifact, or all of them into a folder."""
    with _client() as client:
        try:
            names = [name] if name else [a["name"] for a in client.artifacts(job_id)]
            for item in names:
                target = output
                if not name:
                    target = output / item
                    target.parent.mkdir(parents=True, exist_ok=True)
                path = client.download_artifact(job_id, item, target)
                console.print(f"{item} → {path}")
        except ApiError as error:
            raise fail(error) from None


@app.command()
def metrics(
    job_id: str,
    name: Annotated[str | None, typer.Option("--name", help="Only this metric.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the metrics into this PNG file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every value, as JSON.")] = False,
) -> None:
    """A job's metrics (what it wrote to $SUBMITTER_METRICS): the latest value of each, its
    range and a sparkline over the steps; --plot FILE draws them as line charts."""
    from submitter.jobmetrics import charts

    with _client() as client:
        try:
            items = client.metrics(job_id, name)
        except ApiError as error:
            raise fail(error) from None
    if as_json:
        print(json.dumps(items, indent=2))
        return
    all_series = charts.series(items)
    if not all_series:
        console.print("no metrics (the job writes JSON lines to the file $SUBMITTER_METRICS)")
    else:
        table = Table("name", "step", "latest", "min", "max", "values", "")
        for one in all_series:
            table.add_row(
                one.name,
                str(one.steps[-1]),
                f"{one.last:.6g}",
                f"{min(one.values):.6g}",
                f"{max(one.values):.6g}",
                str(len(one.values)),
                charts.sparkline(one.values),
            )
        console.print(table)
    if plot is not None:
        charts.plot_png(all_series, plot, f"job {job_id[:SHORT_ID]}")
        console.print(f"plot → {plot}")
