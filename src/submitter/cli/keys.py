"""`submitter keys`: create, list and revoke API keys (talks to the database directly)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from submitter.config import get_settings
from submitter.db.migrate import upgrade
from submitter.runtime import Runtime
from submitter.security import ApiKeyError, Role, create_key, list_keys, revoke_key

app = typer.Typer(
    help="API keys (run on a host that can reach the database).", no_args_is_help=True
)
console = Console()


def _runtime() -> Runtime:
    settings = get_settings()
    if settings.is_embedded_db:
        upgrade(settings)
    return Runtime(settings)


@app.command("create")
def create(
    name: str,
    role: Annotated[Role, typer.Option(help="admin, user or viewer")] = Role.user,
) -> None:
    """Create a key and print it. It is shown this once; only its hash is stored."""
    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            row, plaintext = create_key(session, name, role)
    except ApiKeyError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"created key [bold]{row.name}[/bold] ({row.role}):")
    print(plaintext)


@app.command("list")
def list_() -> None:
    """List keys (names, roles, prefixes; never the keys)."""
    runtime = _runtime()
    with runtime.sessions() as session:
        rows = list_keys(session)
    table = Table("name", "role", "prefix", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            row.name,
            row.role,
            row.prefix + "…",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a key by name or id; it stops working at once."""
    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            row = revoke_key(session, name)
    except ApiKeyError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"revoked [bold]{row.name}[/bold]")
