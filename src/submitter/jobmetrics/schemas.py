"""What the API says about a job's metrics."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class MetricOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    step: int
    value: float
    at: datetime
