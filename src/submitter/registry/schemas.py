"""Registry resources as the API and the client see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from submitter.db.types import INT32_MAX


class ModelOut(BaseModel):
    name: str
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_name: str
    version: int
    task: str
    algorithm: str
    metric: str
    metrics: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    params: dict[str, Any]
    feature_schema: list[dict[str, Any]]
    classes: list[Any] | None
    target: str
    dataset_id: str | None
    job_id: str | None
    size: int
    sha256: str
    created_at: datetime
    plots: list[str] = Field(
        default_factory=list,
        description="Artifact names of the training job's plots (`plots/roc.png`, ...), "
        "downloadable at /api/v1/jobs/{job_id}/artifacts/{name}; empty until that job has "
        "finished, and for versions trained before plots were made.",
    )


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=INT32_MAX)


class AliasOut(BaseModel):
    model: str
    alias: str
    version: int
