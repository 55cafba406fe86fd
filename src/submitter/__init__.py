"""Submitter: an MLOps job platform.

Datasets, training, a model registry, predictions and HPC batch jobs behind one REST API,
one CLI and one notebook client; work runs on Celery workers or on SLURM clusters.
"""

__version__ = "0.1.0"

from typing import Any

__all__ = ["ApiError", "ApiUnreachable", "Client", "SubmitterError", "__version__"]


def __getattr__(name: str) -> Any:
    """`from submitter import Client` without importing the client into every server
    process that imports `submitter`."""
    if name in {"ApiError", "ApiUnreachable", "Client", "JobFailed", "SubmitterError"}:
        from submitter import client

        return getattr(client, name)
    raise AttributeError(f"module 'submitter' has no attribute {name!r}")
