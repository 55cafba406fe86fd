"""The metadata database: models, engine, sessions, migrations. One layer for API and workers."""
