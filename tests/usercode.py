"""What the tests of users' code share: submitting a command job, reading its artifacts,
and finding processes on this host (seen from outside any sandbox)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Stack


def submit_command(
    stack: Stack, spec: dict[str, Any], *, role: str = "user", expect: int = 202
) -> Any:
    response = stack.api.post(
        "/api/v1/jobs", json={"kind": "command", "spec": spec}, headers=stack.headers(role)
    )
    assert response.status_code == expect, response.text
    return response.json()


def artifact(stack: Stack, job_id: str, name: str) -> bytes:
    response = stack.api.get(
        f"/api/v1/jobs/{job_id}/artifacts/{name}", headers=stack.headers("viewer")
    )
    assert response.status_code == 200, (name, response.text)
    return response.content


def host_processes(program: str, prefix: str) -> list[int]:
    """Pids on this host running `program` with a first argument starting with `prefix`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == program.encode() and len(argv) > 1 and argv[1].startswith(prefix.encode()):
            found.append(int(pid))
    return found
