"""Model files: skops, never pickle, loaded against an explicit list of trusted types.

A pickle runs arbitrary code when loaded, and model files come from uploads and object
storage. skops stores the object tree as data and rebuilds only types it trusts: its own
defaults (scikit-learn estimators, numpy and builtin containers) plus the list below. Anything
else in a file, such as a class nobody here wrote or a function like `os.system`, is refused
before any object is built.

`TRUSTED_TYPES` is what `skops.io.get_untrusted_types` reports for pipelines of every model in
the catalogue (with and without string columns, classification and regression), written out
by hand: computing it from the file at load time would trust whatever the file contains.
`tests/ml/test_modelfile.py` re-derives it and fails when a new model needs a new type.
A blend (`submitter.ml.blend`: a Voting estimator of member pipelines) needs none: the
Voting estimators and their label encoder are scikit-learn types skops trusts itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import skops.io as sio
from sklearn.pipeline import Pipeline

SKLEARN_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "functools.partial",  # HGB with categorical features wraps check_array in one
    "sklearn.utils.validation.check_array",
    "sklearn.tree._tree.Tree",  # dt, rf, et
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hgb
    "sklearn.neighbors._kd_tree.KDTree",  # knn
    "sklearn.metrics._dist_metrics.EuclideanDistance64",  # knn
)
LIGHTGBM_TYPES: tuple[str, ...] = (
    "collections.OrderedDict",  # LightGBM's parameter dicts
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
)
TRUSTED_TYPES: tuple[str, ...] = SKLEARN_TYPES + LIGHTGBM_TYPES


class UntrustedModelFile(ValueError):
    """The file holds types outside the trusted list (or is not a model file at all)."""

    def __init__(self, message: str, types: list[str] | None = None) -> None:
        super().__init__(message)
        self.types = types or []


def save(pipeline: Pipeline, path: str | Path) -> None:
    """Write `pipeline` to `path` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sio.dump(pipeline, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> Pipeline:
    """Read a pipeline written by `save`; refuse a file with untrusted types."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UntrustedModelFile(f"{path} is a directory, not a model file") from None
    return loads(data, source=str(path))


def dumps(pipeline: Pipeline) -> bytes:
    """The bytes `save` would write, for storage backends that take bytes (S3)."""
    return bytes(sio.dumps(pipeline))


def loads(data: bytes, *, source: str = "model file") -> Pipeline:
    """`load` from bytes."""
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # not a zip, no schema: not something we wrote
        raise UntrustedModelFile(f"{source} is not a skops model file: {exc}") from exc
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelFile(
            f"{source} contains types that are not trusted: {', '.join(unexpected)}", unexpected
        )
    obj = sio.loads(data, trusted=list(TRUSTED_TYPES))
    if not isinstance(obj, Pipeline):
        raise UntrustedModelFile(f"{source} holds a {type(obj).__name__}, not a Pipeline")
    return obj
