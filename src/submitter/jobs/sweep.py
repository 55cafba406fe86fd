"""`sweep`: one job per combination of a parameter matrix, as the children of this one.

    {"kind": "sweep", "spec": {"kind": "echo", "spec": {"message": "lr={{lr}}"},
                               "matrix": {"lr": [0.1, 0.01]}, "max_parallel": 1}}

The children are created with the parent (submitter.sweeps.service.create), in phase
`held`. When the parent runs it releases them (or submits a SLURM sweep as one job array,
submitter.hpc.arrays) and is handed off in phase `children`; the last child to end settles
it.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from submitter.jobs.context import HandedOff, JobContext
from submitter.jobs.registry import JobKind
from submitter.sweeps import matrix as templates
from submitter.sweeps.service import CHILDREN, MAX_CHILDREN, create, release_children
from submitter.sweeps.service import KIND as NAME

_PARAMETER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, description="The children's job kind.")
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The children's spec, a template: `{{name}}` is filled from the matrix "
        "(a string that is only a placeholder takes the value with its JSON type).",
    )
    matrix: dict[str, list[Any]] = Field(
        min_length=1,
        max_length=20,
        description=f"Parameter → values; one child per combination (at most {MAX_CHILDREN}).",
    )
    max_parallel: int | None = Field(
        default=None, ge=1, le=10_000, description="At most this many children run at once."
    )

    @field_validator("kind")
    @classmethod
    def _not_a_sweep(cls, value: str) -> str:
        if value == NAME:
            raise ValueError("a sweep's children cannot be sweeps")
        return value

    @field_validator("matrix")
    @classmethod
    def _check_matrix(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in value.items():
            if not _PARAMETER.match(name):
                raise ValueError(f"{name!r} is not a parameter name (letters, digits, _)")
            if not values:
                raise ValueError(f"parameter {name!r} has no values")
        count = templates.count(value)
        if count > MAX_CHILDREN:
            sizes = " x ".join(str(len(v)) for v in value.values())
            raise ValueError(
                f"the matrix makes {count} combinations ({sizes}); a sweep has at most "
                f"{MAX_CHILDREN} children"
            )
        return value

    @model_validator(mode="after")
    def _placeholders_known(self) -> SweepSpec:
        unknown = sorted(templates.placeholders(self.spec) - set(self.matrix))
        if unknown:
            names = ", ".join("{{" + u + "}}" for u in unknown)
            raise ValueError(f"spec uses {names}, which the matrix does not define")
        return self


def run(spec: SweepSpec, ctx: JobContext) -> NoReturn:
    if spec.kind == "slurm":
        from submitter.hpc.arrays import submit_array

        submit_array(ctx)
    released = release_children(ctx.runtime, ctx.job_id)
    ctx.log(f"released {len(released)} child job(s)")
    raise HandedOff(CHILDREN, message=f"{templates.count(spec.matrix)} children")


KIND = JobKind(
    name=NAME,
    spec_model=SweepSpec,
    run=run,
    description="One child job per combination of a parameter matrix, max_parallel at once.",
    create=create,
)
