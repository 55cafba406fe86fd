"""What a job kind is, and the table of all kinds by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from submitter.jobs.context import JobContext

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from submitter.db.models import Job
    from submitter.runtime import Runtime

#: (spec with references replaced by ids, dataset ids it reads, pydantic-style errors)
ResolvedSpec = tuple[dict[str, Any], list[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class JobKind:
    """A job kind: a pydantic model that validates the spec and a function that runs it.

    `run` returns something JSON-serialisable: it becomes the job's `result`.
    `queue` names the Celery queue its messages go to (`default`, `train`, `hpc`).
    `dataset_fields` are spec fields holding a dataset reference (id, `name` or
    `name@version`): they are resolved to the dataset id when the job is submitted, so the
    job reads the version it was submitted with, and the dataset cannot be deleted under it.
    """

    name: str
    spec_model: type[BaseModel]
    run: Callable[[Any, JobContext], Any]
    queue: str = "default"
    description: str = ""
    dataset_fields: tuple[str, ...] = ()
    #: For references nested deeper than a field: `(runtime, connection, spec)` →
    #: `(spec, dataset ids, pydantic-style errors)`, run in the submit transaction.
    resolve_spec: Callable[[Runtime, Connection, dict[str, Any]], ResolvedSpec] | None = None
    #: How many jobs of one batch may share a broker message (run one after the other by
    #: one pool process). More than 1 only for kinds whose runs take milliseconds, where
    #: the per-message cost dominates; a long kind keeps 1 so a batch spreads over workers.
    group: int = 1
    #: Whether this owner (a key id) may submit a job of the kind now: `(runtime,
    #: connection, owner)` → None, or why not (a 422 under `kind`). Checked at every submit,
    #: of a job, a batch's job or a schedule.
    admit: Callable[[Runtime, Connection, str], str | None] | None = None
    #: For a kind whose submission makes more than one row (a sweep and its children):
    #: called by `jobs.service.submit` with its keyword arguments instead of the plain insert.
    create: Callable[..., tuple[Job, bool]] | None = None


class UnknownKind(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown job kind {name!r}; known kinds: {', '.join(known)}")
        self.name = name


@cache
def all_kinds() -> dict[str, JobKind]:
    # Imported here so that adding a kind is one line and nothing imports kinds at start-up
    # that does not need them.
    from submitter.jobs import command, describe, echo, predict, slurm, sweep, train

    kinds = (
        echo.KIND,
        describe.KIND,
        train.KIND,
        predict.KIND,
        slurm.KIND,
        sweep.KIND,
        command.KIND,
    )
    return {kind.name: kind for kind in kinds}


def get_kind(name: str) -> JobKind:
    kinds = all_kinds()
    if name not in kinds:
        raise UnknownKind(name, sorted(kinds))
    return kinds[name]
