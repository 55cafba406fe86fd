"""PyCaret, the training benchmarks' baseline: its own virtual environment, created on first use.

PyCaret 3.3.2 pins old scikit-learn, pandas and numpy releases, so it never shares a venv with
Submitter: `python3 -m venv` + `pip install pycaret==3.3.2 six` (six: scikit-plot imports it
and PyCaret does not pull it in), ~1.1 GB, then reused by `train_credit.py` and
`train_suite.py`. Install it before measuring anything, so pip never overlaps a measurement.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from _common import BenchError, clean_env, log

PYCARET_VERSION = "3.3.2"
DEFAULT_PYCARET_VENV = Path.home() / ".cache" / "submitter-bench" / f"pycaret-{PYCARET_VERSION}"
PYCARET_PACKAGES = (f"pycaret=={PYCARET_VERSION}", "six")
SUPPORTED_PYCARET_PYTHONS = ((3, 9), (3, 10), (3, 11))

Run = Callable[..., str]
"""`Processes.run(name, cmd, env, timeout=...)` of the calling benchmark: runs to completion,
raises BenchError on failure, and is stopped with the benchmark on Ctrl+C."""


def ensure_pycaret(venv: Path, base_python: str, run: Run) -> Path:
    """The venv's python with PyCaret importable: create the venv / install it if needed."""
    python = venv / "bin" / "python"
    if python.exists() and pycaret_version(python) == PYCARET_VERSION:
        log(f"PyCaret {PYCARET_VERSION}: reusing {venv}")
        return python
    if not python.exists():
        if venv.exists() and any(venv.iterdir()):
            raise BenchError(f"{venv} exists and is not a virtual environment; choose another")
        _check_base_python(base_python)
        log(f"PyCaret {PYCARET_VERSION}: creating a virtual environment in {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        run("venv", [base_python, "-m", "venv", str(venv)], clean_env(), timeout=300)
    log(
        f"PyCaret {PYCARET_VERSION}: installing {' '.join(PYCARET_PACKAGES)} into {venv} "
        "(~1.1 GB, a few minutes; reused next time)"
    )
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    run("pip-install", [*pip, *PYCARET_PACKAGES], clean_env(), timeout=3600)
    installed = pycaret_version(python)
    if installed != PYCARET_VERSION:
        raise BenchError(f"after pip install, `import pycaret` gives {installed!r} in {venv}")
    return python


def pycaret_version(python: Path) -> str | None:
    """pycaret.__version__ if PyCaret (and six, which its plots need) import, else None."""
    check = "import six, pycaret; print(pycaret.__version__)"
    done = subprocess.run(
        [str(python), "-c", check], env=clean_env(), capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _check_base_python(base_python: str) -> None:
    done = subprocess.run(
        [base_python, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{base_python} does not run: {done.stderr.strip()}")
    version = tuple(int(part) for part in done.stdout.split())
    if version not in SUPPORTED_PYCARET_PYTHONS:
        raise BenchError(
            f"PyCaret {PYCARET_VERSION} needs Python 3.9-3.11; {base_python} is "
            f"{'.'.join(map(str, version))} (use --base-python)"
        )
