"""The Alembic migrations build exactly the schema the models describe, on SQLite and
PostgreSQL, and downgrade cleanly: a model change without its migration fails here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from submitter.config import load_settings
from submitter.db.migrate import alembic_config, upgrade
from submitter.db.models import Base
from tests.services import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'submitter.db'}"
    else:
        with postgres_database() as url:
            yield url


def test_migrations_match_the_models(database_url: str, tmp_path: Path) -> None:
    upgrade(load_settings(home=tmp_path, database_url=database_url))
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_to_nothing_and_up_again(database_url: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, database_url=database_url)
    upgrade(settings)
    command.downgrade(alembic_config(database_url), "base")
    engine = create_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(settings)
