"""Query and path parameters shared by several routes, each bounded to what SQL can hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from submitter.db.types import INT32_MAX

Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX, description="Skip this many items.")]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="A version number.")]
