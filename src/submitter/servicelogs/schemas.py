"""The service-log API's models, and the service and level names it accepts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The processes that keep their records in the table (`submitter <name>`). Client
#: commands of the CLI are not services: they only log to their terminal.
SERVICES = ("api", "worker", "beat", "flower")
ServiceName = Literal["api", "worker", "beat", "flower"]
#: A service, or `all` of them (e.g. everything one job made happen, anywhere).
ServiceFilter = Literal["all", "api", "worker", "beat", "flower"]

LevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LEVELS: dict[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

Order = Literal["newest", "oldest"]


def level_name(number: int) -> str:
    """`30` → `WARNING`; a custom level without a name → `Level 25`, as `logging` says it."""
    name = logging.getLevelName(number)
    return name if isinstance(name, str) else f"Level {number}"


def as_utc(value: datetime | None) -> datetime | None:
    """A query's time as an aware UTC datetime: a naive one is taken as UTC. One that has
    no UTC equivalent (year 1 at +01:00, year 9999 at -01:00) is refused here (422) rather
    than overflowing in SQL (500)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("the time has no UTC equivalent (out of range)") from None


class ServiceLogOut(BaseModel):
    """One record of a service process."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Increasing: pass the last one seen as `after_id` to follow.")
    time: datetime = Field(description="When the process logged it (its clock, UTC).")
    service: str = Field(description="api, worker, beat or flower.")
    host: str = Field(description="The host (container) name of the process.")
    pid: int = Field(description="The process id: a worker's pool children have their own.")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    logger: str = Field(description="The logger's name, e.g. submitter.worker.runner.")
    message: str = Field(description="The message, with its traceback; at most 8 KiB or so.")
    job_id: str | None = Field(description="The job being run when it was logged, if any.")

    @field_validator("level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        return level_name(value) if isinstance(value, int) else value
