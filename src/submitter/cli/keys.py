"""`submitter keys`: create, list and revoke API keys (talks to the database directly)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from submitter.cli.groups import command_group
from submitter.roles import Role

if TYPE_CHECKING:
    from submitter.runtime import Runtime

app = command_group("API keys (run on a host that can reach the database).")
console = Console()


def _runtime() -> Runtime:
    # Imported here: the database stack is not needed to start the CLI (`--help`).
    from submitter.config import get_settings
    from submitter.db.migrate import upgrade
    from submitter.runtime import Runtime

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
    from submitter.security import ApiKeyError, create_key

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
    from submitter.security import list_keys

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
    from submitter.security import ApiKeyError, revoke_key

    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            row = revoke_key(session, name)
    except ApiKeyError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"revoked [bold]{row.name}[/bold]")
