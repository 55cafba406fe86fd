"""`submitter schedules`: periodic jobs (over HTTP), fired by `submitter beat`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.groups import command_group
from submitter.cli.jobs import STATE_STYLE, fail, parse_spec
from submitter.client import ApiError, Client

app = command_group("Periodic jobs: cron or interval, run by beat.")
console = Console()

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(method: str, *args: Any, **kwargs: Any) -> Any:
    with Client() as client:
        try:
            return getattr(client, method)(*args, **kwargs)
        except ApiError as error:
            raise fail(error) from None


def _when(schedule: dict[str, Any]) -> str:
    if schedule["cron"]:
        zone = "" if schedule["timezone"] == "UTC" else f" ({schedule['timezone']})"
        return f"cron {schedule['cron']}{zone}"
    return f"every {schedule['interval_seconds']:g} s"


def _print(schedule: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(schedule, indent=2))
        return
    state = "[green]enabled[/]" if schedule["enabled"] else "[magenta]paused[/]"
    console.print(f"[bold]{schedule['name']}[/bold] ({schedule['id']}) {state}")
    console.print(f"  {schedule['kind']} {json.dumps(schedule['spec'])}")
    console.print(f"  {_when(schedule)}, next run: {schedule['next_run_at'] or '-'}")
    console.print(f"  runs: {schedule['runs']}, last job: {schedule['last_job_id'] or '-'}")
    if schedule["last_message"]:
        console.print(f"  [yellow]{schedule['last_message']}[/]")


@app.command()
def create(
    name: str,
    kind: str,
    spec: Annotated[str, typer.Option(help="The job spec as JSON.")] = "{}",
    cron: Annotated[str | None, typer.Option(help="e.g. '0 3 * * *' or @daily.")] = None,
    every: Annotated[float | None, typer.Option(help="Interval in seconds.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone for --cron.")] = None,
    paused: Annotated[bool, typer.Option(help="Create it disabled.")] = False,
    allow_overlap: Annotated[
        bool, typer.Option(help="Submit even while the previous run is active.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Submit a KIND job with --spec on --cron or --every N seconds."""
    schedule = _call(
        "create_schedule",
        name,
        kind,
        parse_spec(spec),
        cron=cron,
        every=every,
        timezone=timezone,
        enabled=not paused,
        allow_overlap=allow_overlap,
    )
    _print(schedule, as_json)


@app.command("list")
def list_(limit: int = 50, offset: int = 0, as_json: AsJson = False) -> None:
    """List schedules by name."""
    page = _call("schedules", limit=limit, offset=offset)
    if as_json:
        print(json.dumps(page, indent=2))
        return
    table = Table("name", "kind", "when", "enabled", "next run", "runs", "last job")
    for s in page["items"]:
        table.add_row(
            s["name"],
            s["kind"],
            _when(s),
            "yes" if s["enabled"] else "no",
            (s["next_run_at"] or "-")[:19],
            str(s["runs"]),
            s["last_job_id"] or "",
        )
    console.print(table)


@app.command()
def show(ref: str, as_json: AsJson = False) -> None:
    """One schedule (by name or id) and its latest jobs."""
    schedule = _call("schedule", ref)
    if as_json:
        _print(schedule, True)
        return
    _print(schedule, False)
    jobs = _call("jobs", schedule=schedule["id"], limit=10)
    for job in jobs["items"]:
        style = STATE_STYLE.get(job["state"], "")
        console.print(f"  {job['created_at'][:19]}  {job['id']}  [{style}]{job['state']}[/]")


@app.command()
def pause(ref: str) -> None:
    """Stop submitting until `resume`."""
    _print(_call("update_schedule", ref, enabled=False), False)


@app.command()
def resume(ref: str) -> None:
    """Submit again, from the next due time after now."""
    _print(_call("update_schedule", ref, enabled=True), False)


@app.command()
def run(ref: str) -> None:
    """Submit the schedule's job now; prints the job id."""
    print(_call("run_schedule", ref)["id"])


@app.command()
def delete(ref: str) -> None:
    """Remove the schedule (its jobs are kept)."""
    _call("delete_schedule", ref)
    console.print(f"deleted {ref}")
