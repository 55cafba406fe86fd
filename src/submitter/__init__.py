"""Submitter: an MLOps job platform.

Datasets, training, a model registry, predictions and HPC batch jobs behind one REST API,
one CLI and one notebook client; work runs on Celery workers or on SLURM clusters.
"""

__version__ = "0.1.0"
