"""`echo`: returns its spec. For tests, the demo and the dispatch benchmark."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from submitter.jobs.context import JobContext
from submitter.jobs.registry import JobKind


class EchoSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=10_000)
    sleep_seconds: float = Field(default=0.0, ge=0, le=24 * 3600)
    fail: bool = False


class EchoFailed(Exception):
    pass


def run(spec: EchoSpec, ctx: JobContext) -> dict[str, Any]:
    if spec.sleep_seconds:
        steps = max(1, min(10, int(spec.sleep_seconds)))
        for step in range(steps):
            ctx.sleep(spec.sleep_seconds / steps)
            ctx.progress((step + 1) / steps)
    if spec.fail:
        raise EchoFailed(f"echo was asked to fail: {spec.message}")
    ctx.log(f"echo: {spec.message}")
    return spec.model_dump()


KIND = JobKind(
    name="echo",
    spec_model=EchoSpec,
    run=run,
    description="Returns its spec; optional sleep_seconds and fail.",
    group=25,
)
