"""Model files: identical predictions after a round trip, and untrusted content refused."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from submitter.ml import blend, modelfile
from submitter.ml.features import feature_schema, model_frame
from submitter.ml.models import CATALOGUE
from submitter.ml.pipeline import build_pipeline
from tests.ml import data


def fitted(name: str, task: str) -> tuple[Pipeline, object]:
    frame = data.regression(n=120) if task == "regression" else data.multiclass(n=120)
    target = "y" if task == "regression" else "label"
    schema = feature_schema(frame, target)
    X = model_frame(frame, schema)
    n_classes = frame[target].nunique() if task == "classification" else 0
    pipeline, fit_params = build_pipeline(schema, CATALOGUE[name], task, len(X), 0, n_classes)
    return pipeline.fit(X, frame[target].to_numpy(), **fit_params), X


def blended(task: str) -> tuple[Pipeline, object]:
    """A blend of a linear model, a forest and a booster, as a winning blend is saved."""
    names = ["lr", "et", "lightgbm" if "lightgbm" in CATALOGUE else "hgb"]
    members = [(name, fitted(name, task)[0]) for name in names]
    frame = data.regression(n=120) if task == "regression" else data.multiclass(n=120)
    y = frame["y" if task == "regression" else "label"].to_numpy()
    return blend.assemble(members, task, y), fitted("lr", task)[1]


def test_every_catalogue_model_round_trips_with_only_trusted_types(tmp_path: Path) -> None:
    """Also keeps TRUSTED_TYPES honest: a new model needing a new type fails here, and a
    listed type no model uses any more is reported."""
    seen: set[str] = set()
    for task in ("classification", "regression"):
        for name in [*CATALOGUE, blend.NAME]:
            if name != blend.NAME and task not in CATALOGUE[name].tasks:
                continue
            pipeline, X = blended(task) if name == blend.NAME else fitted(name, task)
            path = tmp_path / f"{task}-{name}.skops"
            modelfile.save(pipeline, path)
            untrusted = set(sio.get_untrusted_types(file=path))
            assert untrusted <= set(modelfile.TRUSTED_TYPES), (name, task)
            seen |= untrusted

            loaded = modelfile.load(path)
            assert isinstance(loaded, Pipeline)
            np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))
            if task == "classification" and hasattr(pipeline, "predict_proba"):
                np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))

    unused = set(modelfile.TRUSTED_TYPES) - seen
    if "lightgbm" not in CATALOGUE:
        unused -= set(modelfile.LIGHTGBM_TYPES)
    assert not unused


def test_bytes_round_trip() -> None:
    pipeline, X = fitted("lr", "classification")
    loaded = modelfile.loads(modelfile.dumps(pipeline))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))


class Sneaky(FunctionTransformer):
    """A class of our own: skops does not know it, and neither does the trusted list."""


def test_a_file_with_an_unknown_class_is_refused(tmp_path: Path) -> None:
    pipeline, X = fitted("lr", "classification")
    evil = Pipeline([("sneaky", Sneaky()), *pipeline.steps])
    evil.fit(X, data.multiclass(n=120)["label"])
    path = tmp_path / "evil.skops"
    sio.dump(evil, path)
    with pytest.raises(modelfile.UntrustedModelFile) as err:
        modelfile.load(path)
    assert err.value.types == [f"{__name__}.Sneaky"]
    assert "Sneaky" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_file_calling_an_unlisted_function_is_refused(tmp_path: Path) -> None:
    evil = Pipeline([("f", FunctionTransformer(builtins.eval)), ("m", LogisticRegression())])
    path = tmp_path / "eval.skops"
    sio.dump(evil, path)
    with pytest.raises(modelfile.UntrustedModelFile, match=r"builtins\.eval"):
        modelfile.load(path)


def test_garbage_and_non_pipelines_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(modelfile.UntrustedModelFile, match="not a skops model file"):
        modelfile.load(garbage)

    bare = tmp_path / "bare.skops"
    sio.dump(LogisticRegression(), bare)
    with pytest.raises(modelfile.UntrustedModelFile, match="not a Pipeline"):
        modelfile.load(bare)


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    pipeline, _ = fitted("dt", "regression")
    path = tmp_path / "sub" / "model.skops"
    modelfile.save(pipeline, path)
    modelfile.save(pipeline, path)
    assert [p.name for p in path.parent.iterdir()] == ["model.skops"]
