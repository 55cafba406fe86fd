"""Alembic migrations, run from code: `submitter db upgrade` and at start on the embedded stack."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from filelock import FileLock

from submitter.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to `revision`.

    On SQLite several local processes may start at once (`submitter up`); a file lock in
    the home folder makes them migrate one after the other.
    """
    config = alembic_config(settings.db_url)
    if settings.is_embedded_db:
        home = settings.ensure_home()
        with FileLock(str(home / "migrate.lock"), timeout=120):
            command.upgrade(config, revision)
    else:
        command.upgrade(config, revision)
