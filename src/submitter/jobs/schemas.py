"""The job resource as the API and the client see it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from submitter.jobs.states import JobState

T = TypeVar("T")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="Job kind, e.g. echo, train, predict, slurm.")
    spec: dict[str, Any] = Field(default_factory=dict, description="Kind-specific settings.")
    depends_on: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Jobs that must succeed first: job ids, and in a batch `#i` for the "
        "batch's job at index i (an earlier one).",
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


#: The most jobs in one `POST /api/v1/jobs/batch` (submitter.jobs.service.MAX_BATCH).
MAX_BATCH = 1000


class JobBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="The job requests, stored all or none; `depends_on` may name an earlier "
        "one as `#i` (its index).",
    )


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    state: JobState
    phase: str | None
    progress: float | None
    message: str | None
    spec: dict[str, Any]
    result: Any | None
    error: str | None
    depends_on: list[str]
    attempts: int
    worker: str | None = Field(
        default=None, description="The worker (host/pid) that ran or runs the latest attempt."
    )
    external_id: str | None
    idempotency_key: str | None
    schedule_id: str | None = Field(description="The schedule that submitted this job, if any.")
    parent_id: str | None = Field(
        default=None, description="The sweep this job is a child of (one matrix combination)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobBatchOut(BaseModel):
    items: list[JobOut] = Field(description="The jobs, in the order of the request.")
    created: list[bool] = Field(
        description="Per job: false when its idempotency key returned an existing job."
    )


class LogLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    level: str
    message: str


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    size: int
    sha256: str
    created_at: datetime


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class SweepRow(BaseModel):
    index: int | None = Field(description="The combination's position in the matrix.")
    job_id: str
    state: JobState
    message: str | None
    external_id: str | None = Field(description="Its SLURM id (`ARRAY_TASK` in an array).")
    params: dict[str, Any] = Field(description="The combination this child ran.")
    values: dict[str, float] = Field(
        description="Its result's numbers by dotted name (`cv.roc_auc`)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The last value of each metric it reported (`$SUBMITTER_METRICS`).",
    )


class SweepTable(BaseModel):
    sweep_id: str
    state: JobState
    message: str | None
    parameters: list[str]
    columns: list[str] = Field(description="Every value name some child has.")
    metric_columns: list[str] = Field(
        default_factory=list, description="Every metric name some child reported."
    )
    best_by: str | None
    best: str | None = Field(description="The child that is best by `best_by`.")
    rows: list[SweepRow]
