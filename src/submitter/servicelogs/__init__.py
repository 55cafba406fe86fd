"""Service logs: the recent log records of every process (api, worker, beat, flower, on
every host), kept in a bounded table of the metadata DB and served at
`GET /api/v1/logs/{service}`.

- `handler`: the logging handler each service process installs (never blocks or fails
  the process; batches its records into the DB from a thread of its own).
- `service`: the queries behind the route, and retention by count and age.
- `schemas`: the route's models and the names of services and levels.

The stdout JSON logs stay as they are, for log collectors; this table is for an operator
who has only the API (or `submitter logs`).
"""
