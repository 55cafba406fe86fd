"""The environment of a user's command on this host (the `command` kind): what it gets of
the worker's, and the CPUs it runs on. The process itself is started and watched by
`submitter.sandbox.supervise`.

- *Environment*: built from an allow-list (`ALLOWED_ENV`: PATH, locale, HOME, ...), never by
  removing names from the worker's own environment, so a secret the worker holds under any
  name (`SUBMITTER_*`, `DATABASE_URL`, `AWS_*`, a cluster key's passphrase) is not there.
  The worker's own venv is taken off PATH: a job without a venv runs the host's Python.
  (In a sandbox, the worker's secrets are not in reach by any other way either.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: The only variables taken from the worker's environment.
ALLOWED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "TZ",
    "TERM",
)
#: Set to `resources.cpus`: the thread pools of OpenMP, MKL, OpenBLAS, numexpr, Accelerate.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def job_environment(
    worker_env: Mapping[str, str], user_env: Mapping[str, str], ours: Mapping[str, str]
) -> dict[str, str]:
    """The allow-listed part of `worker_env`, then the spec's `env`, then Submitter's own
    (the metrics file, the thread counts, the venv): those win over a spec's values."""
    env = {name: worker_env[name] for name in ALLOWED_ENV if name in worker_env}
    if "PATH" in env and sys.prefix != sys.base_prefix:
        own = os.path.join(sys.prefix, "bin")
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != own)
    env.setdefault("PATH", os.defpath)
    env.update(user_env)
    env.update(ours)
    return env


def pick_cpus(count: int, seed: str) -> list[int]:
    """`count` of the CPUs this worker may use, starting at a place `seed` (the job id)
    chooses: concurrent jobs on one host spread over its CPUs instead of all taking CPU 0."""
    available = sorted(os.sched_getaffinity(0))
    count = min(count, len(available))
    start = int(seed[:8], 16) % len(available) if seed[:8].isalnum() else 0
    return sorted(available[(start + i) % len(available)] for i in range(count))
