"""Tabular AutoML core: feature schemas, preprocessing, model comparison and model files.

This package is pure machine learning: it knows nothing about jobs, the database or the API.
A training job hands `train` a table and two callbacks (progress and "should I stop?"), gets
back a `TrainResult` with a fitted scikit-learn `Pipeline`, and saves it with
`modelfile.save`. A prediction request is validated against the saved feature schema with
`features.check_rows` before the pipeline sees it, so bad input becomes a 4xx naming the field
instead of a stack trace from deep inside scikit-learn.
"""

from submitter.ml.features import SchemaError, check_rows, feature_schema
from submitter.ml.modelfile import UntrustedModelFile, load, save
from submitter.ml.models import DEFAULT_MODELS, available_models
from submitter.ml.training import TrainingStopped, TrainResult, train

__all__ = [
    "DEFAULT_MODELS",
    "SchemaError",
    "TrainResult",
    "TrainingStopped",
    "UntrustedModelFile",
    "available_models",
    "check_rows",
    "feature_schema",
    "load",
    "save",
    "train",
]
