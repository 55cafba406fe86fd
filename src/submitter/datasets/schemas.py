"""The dataset resource as the API and the client see it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    version: int
    format: str
    columns: list[dict[str, Any]]
    row_count: int
    byte_size: int
    upload_bytes: int
    sha256: str
    created_at: datetime
    created_by: str
