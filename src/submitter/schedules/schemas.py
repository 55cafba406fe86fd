"""The schedule resource as the API and the client see it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from submitter.names import NAME_PATTERN
from submitter.schedules.timing import MIN_INTERVAL_SECONDS, check_cron, check_timezone

_TIMING = "give exactly one of `cron` and `interval_seconds`"


class _Timing(BaseModel):
    """Fields shared by create and update, with the checks that name the field."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None,
        max_length=200,
        description="5-field cron expression (minute hour day month weekday) or @daily etc.",
        examples=["0 3 * * *"],
    )
    interval_seconds: float | None = Field(
        default=None, ge=MIN_INTERVAL_SECONDS, le=366 * 86400, description="Fire every N seconds."
    )
    timezone: str | None = Field(
        default=None, max_length=64, description="IANA zone the cron expression is read in."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            check_timezone(value)
        return value


class ScheduleCreate(_Timing):
    name: str = Field(pattern=NAME_PATTERN.pattern, description="Unique; usable instead of the id.")
    kind: str = Field(description="Job kind, e.g. train, predict, slurm.")
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The job's spec. Dataset names are resolved at each run: `credit` means "
        "the latest version of `credit` when the job is submitted.",
    )
    enabled: bool = True
    allow_overlap: bool = Field(
        default=False, description="Submit even while the previous run is still active."
    )

    @model_validator(mode="after")
    def _one_timing(self) -> Self:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError(_TIMING)
        return self


class ScheduleUpdate(_Timing):
    """Only the fields sent change. Sending `cron` switches an interval schedule to cron, and
    the other way round."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN.pattern)
    spec: dict[str, Any] | None = None
    enabled: bool | None = None
    allow_overlap: bool | None = None

    @model_validator(mode="after")
    def _one_timing(self) -> Self:
        if self.cron is not None and self.interval_seconds is not None:
            raise ValueError(_TIMING)
        return self


class ScheduleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    spec: dict[str, Any]
    cron: str | None
    interval_seconds: float | None
    timezone: str
    enabled: bool
    allow_overlap: bool
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: str | None
    last_message: str | None = Field(description="Why the last run submitted no job, if so.")
    runs: int = Field(description="Jobs this schedule has submitted.")
