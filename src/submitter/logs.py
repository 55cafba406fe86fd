"""Structured logging: one JSON object per line off a terminal, Rich on a terminal.

Every record carries the job id of the job being run (from a context variable), so the log
lines of one job can be found across the API, the workers and beat. Service processes also
keep their recent records in the metadata DB (`submitter.servicelogs`), for
`GET /api/v1/logs/{service}`; stdout stays the full record, for log collectors.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from submitter.config import Settings

job_id_var: ContextVar[str | None] = ContextVar("submitter_job_id", default=None)


class ContextFilter(logging.Filter):
    """Adds `job_id` and `service` to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_id", None):
            record.job_id = job_id_var.get()
        record.service = self.service
        return True


def setup_logging(
    service: str,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    service_logs: Settings | None = None,
) -> None:
    """Configure the root logger of this process once, for `service` (api, worker, beat, cli).

    With `service_logs` (the settings of a service process: api, worker, beat, flower), the
    records also go to the metadata DB, unless `SUBMITTER_SERVICE_LOG_ENABLED` is false.
    Client commands pass none: they are not services, and their terminal shows their logs.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler: logging.Handler
    if use_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(job_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("[%(service)s] %(message)s"))
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    earlier = sys.modules.get("submitter.servicelogs.handler")
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if earlier is not None and isinstance(existing, earlier.ServiceLogHandler):
            existing.close()  # writes what it holds and stops its thread
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter that is rarely useful at INFO.
    for noisy in (
        "httpx",
        "httpcore",
        "alembic.runtime.migration",
        "alembic.runtime.plugins",
        "kombu",
        "amqp",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    if service_logs is not None:
        from submitter.servicelogs.handler import install

        install(service, service_logs)
