"""Alembic environment: runs online against the URL set by `submitter.db.migrate`."""

from __future__ import annotations

from alembic import context

from submitter.db.models import Base
from submitter.db.session import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is set by submitter.db.migrate"
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
