"""The `submitter` command: servers (api, worker, beat, up), admin (db, keys), client commands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from submitter.cli import (
    clusters,
    datasets,
    demo,
    jobs,
    keys,
    logs,
    models,
    operations,
    schedules,
    server,
)
from submitter.client import ApiUnreachable

app = typer.Typer(
    name="submitter",
    help="Submitter: run ML and HPC jobs, keep datasets and models, serve predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain Click help: Typer's Rich help imports a Markdown parser, 0.2 s of every
    # `--help` (python -X importtime).
    rich_markup_mode=None,
)
server.register(app)
app.add_typer(server.db_app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(jobs.app, name="jobs")
app.add_typer(datasets.app, name="datasets")
app.add_typer(models.app, name="models")
app.add_typer(clusters.app, name="clusters")
app.add_typer(schedules.app, name="schedules")
app.command("demo")(demo.demo)
app.command("workers")(operations.workers)
app.command("tasks")(operations.tasks)
app.command("logs")(logs.logs)


def main() -> None:
    try:
        app()
    except ApiUnreachable as error:
        Console(stderr=True).print(f"[red]error[/red]: {error}")
        sys.exit(1)
    except Exception as error:
        # Settings are imported by the commands that need them, not at start-up: only
        # then can a ConfigError have been raised.
        config = sys.modules.get("submitter.config")
        if config is None or not isinstance(error, config.ConfigError):
            raise
        Console(stderr=True).print(f"[red]configuration error[/red]: {error}")
        sys.exit(2)
