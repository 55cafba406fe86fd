"""The job state machine.

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled
       │  ▲              │
       │  └─lease lost───┘   (reconciler; attempts < max_attempts)
       └──▶ cancelled | failed   (cancel; a dependency failed or was cancelled)

`phase` refines a state (`waiting` for dependencies, `preparing`, `submitted`, ...).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = frozenset({JobState.queued, JobState.running})
TERMINAL = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})
