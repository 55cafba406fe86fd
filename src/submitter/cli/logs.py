"""`submitter logs SERVICE`: the service processes' recent records, over HTTP (admin key)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from submitter.cli.jobs import fail
from submitter.client import ApiError, Client

console = Console()

LEVEL_STYLE = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
#: Seconds between two reads while following.
FOLLOW_EVERY = 1.0


def logs(
    service: Annotated[str, typer.Argument(help="api, worker, beat, flower or all.")] = "all",
    host: Annotated[str | None, typer.Option(help="Only this host.")] = None,
    level: Annotated[
        str | None, typer.Option(help="At least this level (debug, info, warning, error).")
    ] = None,
    job: Annotated[str | None, typer.Option(help="Only records logged while this job ran.")] = None,
    limit: Annotated[int, typer.Option(help="The newest this many records.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new records as they come.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Print the recent log records of the api, worker, beat or flower processes of every
    host, oldest first (needs an admin key). Each process's stdout keeps the full stream."""
    filters: dict[str, Any] = {
        "host": host,
        "level": level.upper() if level else None,
        "job_id": job,
    }
    with Client() as client:
        try:
            page = client.service_logs(service, limit=limit, **filters)
            records = list(reversed(page["items"]))
            last = max((r["id"] for r in records), default=0)
            _print(records, as_json)
            while follow:
                time.sleep(FOLLOW_EVERY)
                page = client.service_logs(
                    service, after_id=last, order="oldest", limit=1000, **filters
                )
                _print(page["items"], as_json)
                last = max((r["id"] for r in page["items"]), default=last)
        except ApiError as error:
            raise fail(error) from None
        except KeyboardInterrupt:
            return


def _print(records: list[dict[str, Any]], as_json: bool) -> None:
    for record in records:
        if as_json:
            print(json.dumps(record), flush=True)
            continue
        level = record["level"]
        text = Text.assemble(
            (record["time"][:23].replace("T", " "), "dim"),
            f" {record['service']}@{record['host']}[{record['pid']}] ",
            (f"{level:8}", LEVEL_STYLE.get(level, "")),
            (f"{record['logger']}: ", "dim"),
            record["message"],
            (f"  job {record['job_id']}" if record["job_id"] else "", "cyan"),
        )
        console.print(text, highlight=False, soft_wrap=True)
