"""Report metrics from inside a Submitter job: `log("loss", 0.42, step=3)`.

Dependency-free on purpose: Submitter puts this one file on the `PYTHONPATH` of every
`command` and `slurm` job, so a job's own venv imports it without installing Submitter.
Each call appends one JSON line `{"name", "value", "step"}` to the file named by
`$SUBMITTER_METRICS`; the worker reads that file into the job's metrics while the job runs
(a command job) or after it (a SLURM job). Outside a job (no variable) it does nothing, so
the same script runs on a laptop unchanged.

From a shell: `python -m submitter_metrics loss 0.42 3`, or write the line yourself:
`echo '{"name": "loss", "value": 0.42, "step": 3}' >> "$SUBMITTER_METRICS"`.
"""

from __future__ import annotations

import json
import math
import os
import sys

__all__ = ["log"]


def log(name: str, value: float, step: int | None = None) -> None:
    """Append one metric value; `step` orders the values of one name (epoch, iteration)."""
    path = os.environ.get("SUBMITTER_METRICS")
    if not path:
        return
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r}: {value!r} is not a finite number")
    line = json.dumps({"name": str(name), "value": number, "step": step})
    # One write of one line in append mode: lines of concurrent writers do not interleave.
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def _main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m submitter_metrics NAME VALUE [STEP]", file=sys.stderr)
        return 2
    log(argv[0], float(argv[1]), int(argv[2]) if len(argv) == 3 else None)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
