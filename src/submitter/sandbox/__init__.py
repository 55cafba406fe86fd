"""The one place that runs users' code: a command job, its venv build, anything a kind runs
from a user's spec.

Two modes, chosen per host by `SUBMITTER_SANDBOX` (`auto`, `bwrap`, `none`):

- **bwrap** (`submitter.sandbox.bwrap`): the kernel confines the code. Its own user, PID,
  mount, IPC, UTS and network namespaces; it sees the system folders read-only, its job
  folder, a private `/tmp` and its venv (read-only), nothing of Submitter's (no other
  process, no `SUBMITTER_HOME`, no configuration, no socket, no network). Limits hold for
  the sandbox as a whole: control groups where the worker may make them
  (`submitter.sandbox.cgroups`), a watchdog over its PID namespace otherwise
  (`submitter.sandbox.watchdog`). Its processes end with it.
- **none**: the code runs as the worker's OS user, with an allow-listed environment and
  rlimits: a boundary against mistakes, not against a hostile user. So only jobs whose
  owner is an admin run this way; a user's command job is refused at submit (422) and
  failed on a worker, with what to install or set.

`supervise.run` starts and watches one process in either mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from submitter.sandbox import bwrap

if TYPE_CHECKING:
    from submitter.config import Settings
    from submitter.roles import Role


@dataclass(frozen=True)
class Mode:
    """How user code runs on this host: `sandboxed`, or not and why not."""

    sandboxed: bool
    why_not: str | None = None


def host_mode(settings: Settings, *, trust_setting: bool = False) -> Mode:
    """This host's mode. `trust_setting`: take `SUBMITTER_SANDBOX=bwrap` at its word
    without starting a probe sandbox (the API, which runs no user code: the workers, where
    it runs, check for themselves)."""
    if settings.sandbox == "none":
        return Mode(False, "SUBMITTER_SANDBOX is none")
    if settings.sandbox == "bwrap" and trust_setting:
        return Mode(True)
    problem = bwrap.probe()
    return Mode(problem is None, problem)


def refusal(settings: Settings, role: Role | None, *, on_worker: bool) -> str | None:
    """Why an owner with `role` may not run user code here; None if they may.

    With a sandbox, anyone the kind lets submit may. Without one, only admins: and with
    `SUBMITTER_SANDBOX=bwrap` a worker that cannot start one refuses even them, since the
    operator asked for no unsandboxed code.
    """
    from submitter.roles import Role

    mode = host_mode(settings, trust_setting=not on_worker)
    if mode.sandboxed:
        return None
    if settings.sandbox == "bwrap":
        return f"SUBMITTER_SANDBOX is bwrap, but {mode.why_not}"
    if role is Role.admin:
        return None
    return (
        f"user code runs without a sandbox here ({mode.why_not}), so only admin keys may "
        "run it; to let users: install bubblewrap on the workers (apt-get install "
        "bubblewrap) and set SUBMITTER_SANDBOX to auto or bwrap"
    )
