"""Registry resources as the API and the client see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    serving: str = Field(
        default="sklearn",
        description="How predictions are computed: `onnx` (the compiled model, which passed "
        "the parity check against scikit-learn at registration) or `sklearn`.",
    )
    serving_reason: str | None = Field(
        default=None, description="Why `sklearn` serves this version (None for `onnx`)."
    )
    plots: list[str] = Field(
        default_factory=list,
        description="Artifact names of the training job's plots (`plots/roc.png`, ...), "
        "downloadable at /api/v1/jobs/{job_id}/artifacts/{name}; empty until that job has "
        "finished, and for versions trained before plots were made.",
    )

    @model_validator(mode="after")
    def _serving(self) -> ModelVersionOut:
        from submitter.ml.compiled import serving_summary

        self.serving, self.serving_reason = serving_summary(self.metrics.get("serving"))
        return self


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=INT32_MAX)


class AliasOut(BaseModel):
    model: str
    alias: str
    version: int
