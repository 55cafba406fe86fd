"""Compiled inference: a fitted pipeline converted to ONNX and run by ONNX Runtime.

scikit-learn spends most of a small prediction in per-call overhead (pandas in the
ColumnTransformer, input checks in every step); the same pipeline as one ONNX graph answers
a row in well under a millisecond. `compile_pipeline` converts a version at registration and
decides, by a parity check, whether the compiled model may serve it:

- every holdout row (up to `PARITY_ROWS`) plus probe rows built from the first one (each
  numeric column missing, each string column at every category, missing, and unknown) is
  predicted both ways;
- labels must be equal on every row, probabilities within `PROBABILITY_TOLERANCE`, regression
  values within `REGRESSION_TOLERANCE` of the prediction spread.

Anything that fails to convert, to load, or the check, is served by scikit-learn as before;
`Compilation.serving` records which path and why, and never raises (a training must not fail
because its winner has no ONNX converter).

The graph computes in float32 (ONNX-ML's imputer and tree ensembles are float-only), hence a
tolerance rather than equality: float32 keeps ~7 significant digits, so the inputs round at
~6e-8 relative and a sum over a few hundred trees or a dot product over a few hundred
features drifts by ~1e-6; 1e-4 leaves two orders of headroom over that and is still far
below any difference a decision could depend on.

String inputs carry missing values as `MISSING` (a NUL character, which the API refuses in
any request, so no real value can collide with it); our pipelines' string imputers are
rewritten to treat it as their missing marker, and one-hot encoders with infrequent
categories (which skl2onnx does not convert) get the converter below.
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from submitter.ml.features import Schema

MISSING = "\x00"
"""How a missing string reaches the compiled graph (ONNX string tensors have no NaN)."""
UNKNOWN_PROBE = "\x01never-seen-category"
PROBABILITY_TOLERANCE = 1e-4
REGRESSION_TOLERANCE = 1e-4
"""Relative to the standard deviation of the checked predictions (and to each value)."""
PARITY_ROWS = 2000
THREADS = 1
"""ONNX Runtime threads per session: requests are the parallelism, and a 1-row call is far
too short to split; more threads only spin against the event loop."""
OPSETS = {"": 17, "ai.onnx.ml": 3}


class NotCompilable(Exception):
    """The pipeline has a step no converter handles (the reason is the message)."""


@dataclass
class Compilation:
    """The ONNX bytes (None when scikit-learn serves) and the record of the decision."""

    onnx: bytes | None
    serving: dict[str, Any] = field(default_factory=dict)


def compile_pipeline(
    pipeline: Pipeline,
    schema: Schema,
    task: str,
    classes: Sequence[Any] | None,
    check: pd.DataFrame | None,
) -> Compilation:
    """Convert `pipeline` and check it against scikit-learn on `check` (model-frame rows).

    Never raises: any failure is a `serving: sklearn` record with the reason.
    """
    if check is None or len(check) == 0:
        return _sklearn("no holdout rows to check the compiled model against")
    try:
        onnx_bytes = to_onnx(pipeline, schema)
    except Exception as exc:  # no converter, or one that refuses these parameters
        return _sklearn(f"not convertible: {type(exc).__name__}: {_short(exc)}")
    probabilities = task == "classification" and hasattr(pipeline, "predict_proba")
    try:
        model = CompiledModel(onnx_bytes, schema, task, classes, probabilities=probabilities)
        rows = pd.concat([check.iloc[:PARITY_ROWS], _probes(check, schema)], ignore_index=True)
        difference = _parity(pipeline, model, rows, task)
    except Exception as exc:
        return _sklearn(f"compiled model failed the check: {type(exc).__name__}: {_short(exc)}")
    if isinstance(difference, str):
        return _sklearn(f"compiled model failed the check: {difference}")
    return Compilation(
        onnx_bytes,
        {
            "path": "onnx",
            "probabilities": probabilities,
            "rows_checked": len(rows),
            "max_difference": difference,
        },
    )


def _sklearn(reason: str) -> Compilation:
    return Compilation(None, {"path": "sklearn", "reason": reason})


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _probes(check: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Variants of the first row: each column missing; each string at every category and at
    one never seen. These are the cases a holdout may not contain."""
    base = check.iloc[0].to_dict()
    rows = []
    for column in schema:
        name = column["name"]
        rows.append({**base, name: np.nan})
        if column["dtype"] == "string":
            for value in [*column.get("categories", []), UNKNOWN_PROBE]:
                rows.append({**base, name: value})
    frame = pd.DataFrame(rows, columns=check.columns)
    for column in schema:
        if column["dtype"] == "string":
            frame[column["name"]] = frame[column["name"]].astype(object)
        else:
            frame[column["name"]] = frame[column["name"]].astype("float64")
    return frame


def _parity(pipeline: Pipeline, model: CompiledModel, rows: pd.DataFrame, task: str) -> Any:
    """The largest difference, or a string saying where parity fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pipeline.predict(rows)
        proba = model.has_probabilities and pipeline.predict_proba(rows)
    labels, probabilities = model.run(model.feed_frame(rows))
    if task == "regression":
        got = np.asarray(labels, dtype="float64")
        scale = float(np.std(expected)) or 1.0
        diff = np.abs(got - expected)
        bound = REGRESSION_TOLERANCE * (scale + np.abs(expected))
        if not np.all(diff <= bound):
            worst = int(np.argmax(diff - bound))
            return f"row {worst}: {got[worst]!r} against {expected[worst]!r}"
        return float(diff.max())
    mismatch = [i for i, (a, b) in enumerate(zip(labels, expected.tolist(), strict=True)) if a != b]
    if mismatch:
        i = mismatch[0]
        return (
            f"{len(mismatch)} labels differ, first row {i}: {labels[i]!r} against {expected[i]!r}"
        )
    if probabilities is None:
        return 0.0
    diff = np.abs(probabilities - proba)
    if diff.max() > PROBABILITY_TOLERANCE:
        return f"probabilities differ by {diff.max():.2g} > {PROBABILITY_TOLERANCE:g}"
    return float(diff.max())


# --- running ------------------------------------------------------------------------------


class CompiledModel:
    """An ONNX Runtime session for one version, fed one input per schema column.

    `run` is safe from several threads at once (ONNX Runtime sessions are), and returns the
    labels as the version's own class values so a response looks as scikit-learn's does.
    """

    def __init__(
        self,
        onnx_bytes: bytes,
        schema: Schema,
        task: str,
        classes: Sequence[Any] | None,
        *,
        probabilities: bool,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.schema = schema
        self.strings = [f["dtype"] == "string" for f in schema]
        self.names = [f["name"] for f in schema]
        self.task = task
        self.classes = list(classes or [])
        outputs = [o.name for o in self.session.get_outputs()]
        self.outputs = outputs
        self.has_probabilities = probabilities and "probabilities" in outputs
        self._label_of = _label_lookup(self.classes)
        self._lock = threading.Lock()

    def feed_frame(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The session's inputs from a model frame (the scikit-learn pipeline's input)."""
        return self.feed({name: frame[name].tolist() for name in self.names})

    def feed(self, columns: Mapping[str, list[Any]]) -> dict[str, np.ndarray]:
        """The session's inputs from validated columns (floats or NaN; strings or NaN)."""
        out: dict[str, np.ndarray] = {}
        for name, is_string in zip(self.names, self.strings, strict=True):
            values = columns[name]
            if is_string:
                array = np.array(
                    [v if isinstance(v, str) else MISSING for v in values], dtype=object
                )
            else:
                array = np.array(values, dtype=np.float32)
            out[name] = array.reshape(-1, 1)
        return out

    def run(self, feed: Mapping[str, np.ndarray]) -> tuple[list[Any], np.ndarray | None]:
        """Labels (class values, or floats for regression) and class probabilities."""
        results = dict(zip(self.outputs, self.session.run(None, dict(feed)), strict=True))
        if self.task == "regression":
            return np.asarray(results[self.outputs[0]]).reshape(-1).astype("float64").tolist(), None
        probabilities = None
        if self.has_probabilities:
            probabilities = np.asarray(results["probabilities"], dtype="float64")
            # Rows sum to 1 in float64, as scikit-learn's do (float32 sums are off by ~1e-8).
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            # The class scikit-learn would answer: argmax of predict_proba, first on a tie.
            labels = [self.classes[i] for i in probabilities.argmax(axis=1).tolist()]
        else:
            labels = [self._label_of[str(v)] for v in np.asarray(results["label"]).reshape(-1)]
        return labels, probabilities


def _label_lookup(classes: Sequence[Any]) -> dict[str, Any]:
    """A label output (string, or int for int and bool classes) back to its class value."""
    lookup: dict[str, Any] = {}
    for index, value in enumerate(classes):
        lookup[str(value)] = value
        if isinstance(value, bool):
            lookup[str(int(value))] = value
        lookup.setdefault(str(index), value)
    return lookup


# --- conversion ---------------------------------------------------------------------------


def to_onnx(pipeline: Pipeline, schema: Schema) -> bytes:
    """The serialized ONNX graph of `pipeline`, one input per schema column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _register_converters()
    inputs = [
        (
            f["name"],
            StringTensorType([None, 1]) if f["dtype"] == "string" else FloatTensorType([None, 1]),
        )
        for f in schema
    ]
    ready = _for_onnx(pipeline)
    estimator = ready.steps[-1][1]
    # Probabilities as a plain [N, classes] tensor, not a list of maps, where the
    # converter has the option (classifiers without predict_proba do not).
    attempts: list[dict[int, dict[str, Any]]] = [{}]
    if hasattr(estimator, "classes_"):
        attempts.insert(0, {id(estimator): {"zipmap": False}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for options in attempts[:-1]:
            try:
                return _serialize(
                    convert_sklearn(
                        ready, initial_types=inputs, target_opset=OPSETS, options=options
                    )
                )
            except NameError as exc:  # "Option 'zipmap' not in [...]": try without
                if "Option" not in str(exc):
                    raise
        return _serialize(
            convert_sklearn(ready, initial_types=inputs, target_opset=OPSETS, options=attempts[-1])
        )


def _serialize(model: Any) -> bytes:
    data: bytes = model.SerializeToString()
    return data


def _for_onnx(step: Any) -> Any:
    """A copy of the fitted pipeline with the steps skl2onnx cannot take as they are swapped
    for equivalents it can (the original, which scikit-learn serves, is not touched)."""
    if isinstance(step, Pipeline):
        clone = copy.copy(step)
        clone.steps = [(name, _for_onnx(part)) for name, part in step.steps]
        return clone
    if isinstance(step, ColumnTransformer):
        clone = copy.copy(step)
        clone.transformers_ = [
            (name, part if isinstance(part, str) else _for_onnx(part), columns)
            for name, part, columns in step.transformers_
        ]
        return clone
    if isinstance(step, SimpleImputer) and step.statistics_.dtype == object:
        clone = copy.copy(step)
        clone.missing_values = MISSING
        return clone
    if type(step) is OneHotEncoder:
        clone = copy.copy(step)
        clone.__class__ = _OneHotForOnnx
        return clone
    if type(step) is OrdinalEncoder:
        clone = copy.copy(step)
        clone.__class__ = _OrdinalForOnnx
        return clone
    return step


class _OneHotForOnnx(OneHotEncoder):
    """Marks a fitted OneHotEncoder for `_convert_one_hot` (never fitted or saved itself)."""


class _OrdinalForOnnx(OrdinalEncoder):
    """Marks a fitted OrdinalEncoder for `_convert_ordinal` (skl2onnx's own converter breaks
    on a NaN among the categories, which every string column with gaps has)."""


def _ordinal_codes(encoder: OrdinalEncoder) -> list[tuple[list[str], list[float]]]:
    """Per input column: its categories and their codes, found by asking the fitted encoder
    itself (so infrequent pooling comes out exactly as scikit-learn does it)."""
    if encoder.handle_unknown != "use_encoded_value":
        raise NotCompilable("ordinal encoders must encode unknown values")
    known = [[c for c in cats if isinstance(c, str)] for cats in encoder.categories_]
    if any(
        len(k) != sum(1 for c in cats if not _is_nan(c))
        for k, cats in zip(known, encoder.categories_, strict=True)
    ):
        raise NotCompilable("ordinal encoders of non-string categories are not supported")
    longest = max((len(k) for k in known), default=0)
    if longest == 0:
        return [([], []) for _ in known]
    probe = np.array(
        [[k[i] if i < len(k) else (k[0] if k else MISSING) for k in known] for i in range(longest)],
        dtype=object,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes = encoder.transform(pd.DataFrame(probe, columns=encoder.feature_names_in_))
    return [(k, [float(v) for v in codes[: len(k), j]]) for j, k in enumerate(known)]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _shape_ordinal(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([rows, len(operator.raw_operator.categories_)])


def _convert_ordinal(scope: Any, operator: Any, container: Any) -> None:
    """Per column: LabelEncoder (string -> code; unknown and MISSING -> their codes)."""
    encoder = operator.raw_operator
    unknown = float(encoder.unknown_value)
    missing = float(getattr(encoder, "encoded_missing_value", np.nan))
    parts = []
    for j, (keys, values) in enumerate(_ordinal_codes(encoder)):
        flat = _column(scope, container, operator.inputs[0].full_name, j, "ord")
        keys, values = [*keys, MISSING], [*values, missing]
        coded = scope.get_unique_variable_name(f"ord_code_{j}")
        container.add_node(
            "LabelEncoder",
            flat,
            coded,
            op_domain="ai.onnx.ml",
            op_version=2,
            keys_strings=keys,
            values_floats=values,
            default_float=unknown,
            name=scope.get_unique_operator_name("LabelEncoder"),
        )
        parts.append(_as_column(scope, container, coded, "ord"))
    container.add_node(
        "Concat",
        parts,
        operator.outputs[0].full_name,
        axis=1,
        name=scope.get_unique_operator_name("Concat"),
    )


def _column(scope: Any, container: Any, source: str, j: int, tag: str) -> str:
    """Column `j` of a [N, k] input as a flat [N] tensor."""
    from skl2onnx.proto import onnx_proto

    index = scope.get_unique_variable_name(f"{tag}_index_{j}")
    container.add_initializer(index, onnx_proto.TensorProto.INT64, [1], [j])
    column = scope.get_unique_variable_name(f"{tag}_column_{j}")
    container.add_node(
        "Gather", [source, index], column, axis=1, name=scope.get_unique_operator_name("Gather")
    )
    shape = scope.get_unique_variable_name(f"{tag}_flat_shape")
    container.add_initializer(shape, onnx_proto.TensorProto.INT64, [1], [-1])
    flat = scope.get_unique_variable_name(f"{tag}_flat_{j}")
    container.add_node(
        "Reshape", [column, shape], flat, name=scope.get_unique_operator_name("Reshape")
    )
    return flat


def _as_column(scope: Any, container: Any, flat: str, tag: str) -> str:
    """A flat [N] tensor as [N, 1]."""
    from skl2onnx.proto import onnx_proto

    shape = scope.get_unique_variable_name(f"{tag}_col_shape")
    container.add_initializer(shape, onnx_proto.TensorProto.INT64, [2], [-1, 1])
    out = scope.get_unique_variable_name(f"{tag}_col")
    container.add_node(
        "Reshape", [flat, shape], out, name=scope.get_unique_operator_name("Reshape")
    )
    return out


def _one_hot_layout(encoder: OneHotEncoder) -> list[tuple[list[str], list[int], int, int]]:
    """Per input column: categories, their output positions, the position of an unknown
    value (or `width`, which one-hot encodes as all zeros) and the width."""
    if encoder.drop_idx_ is not None:
        raise NotCompilable("one-hot encoders with `drop` are not supported")
    if encoder.handle_unknown == "error":
        raise NotCompilable("one-hot encoders with handle_unknown='error' are not supported")
    infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(
        encoder.categories_
    )
    layout = []
    for categories, rare in zip(encoder.categories_, infrequent, strict=True):
        rare_set = {str(c) for c in (rare if rare is not None else [])}
        frequent = [str(c) for c in categories if str(c) not in rare_set]
        positions = {c: i for i, c in enumerate(frequent)}
        width = len(frequent) + (1 if rare_set else 0)
        for c in rare_set:
            positions[c] = len(frequent)
        # handle_unknown="infrequent_if_exist": an unknown value joins the infrequent ones.
        pooled = rare_set and encoder.handle_unknown == "infrequent_if_exist"
        unknown = len(frequent) if pooled else width
        layout.append((list(positions), list(positions.values()), unknown, width))
    return layout


def _shape_one_hot(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    total = sum(width for *_, width in _one_hot_layout(operator.raw_operator))
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([rows, total])


def _convert_one_hot(scope: Any, operator: Any, container: Any) -> None:
    """Per column: LabelEncoder (string -> position), OneHot, reshape; then concat."""
    from skl2onnx.proto import onnx_proto

    source = operator.inputs[0].full_name
    parts = []
    for j, (keys, values, unknown, width) in enumerate(_one_hot_layout(operator.raw_operator)):
        if width == 0:
            continue
        flat = _column(scope, container, source, j, "ohe")
        coded = scope.get_unique_variable_name(f"ohe_code_{j}")
        container.add_node(
            "LabelEncoder",
            flat,
            coded,
            op_domain="ai.onnx.ml",
            op_version=2,
            keys_strings=keys,
            values_int64s=values,
            default_int64=unknown,
            name=scope.get_unique_operator_name("LabelEncoder"),
        )
        depth = scope.get_unique_variable_name(f"ohe_depth_{j}")
        container.add_initializer(depth, onnx_proto.TensorProto.INT64, [1], [width])
        on_off = scope.get_unique_variable_name(f"ohe_values_{j}")
        container.add_initializer(on_off, onnx_proto.TensorProto.FLOAT, [2], [0.0, 1.0])
        hot = scope.get_unique_variable_name(f"ohe_hot_{j}")
        container.add_node(
            "OneHot",
            [coded, depth, on_off],
            hot,
            axis=-1,
            name=scope.get_unique_operator_name("OneHot"),
        )
        parts.append(hot)
    if not parts:
        raise NotCompilable("a one-hot encoder without categories")
    container.add_node(
        "Concat",
        parts,
        operator.outputs[0].full_name,
        axis=1,
        name=scope.get_unique_operator_name("Concat"),
    )


def _register_hist_gradient_boosting(register: Any) -> None:
    """skl2onnx's HGB converters, refusing categorical splits (which they would silently
    treat as numeric thresholds) and with node ids made plain ints (they pass numpy uint32,
    which onnx's attribute builder rejects next to plain ints)."""
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from skl2onnx.shape_calculators.ensemble_shapes import (
        calculate_tree_classifier_output_shapes,
        calculate_tree_regressor_output_shapes,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def wrap(convert: Any) -> Any:
        def converter(scope: Any, operator: Any, container: Any) -> None:
            categorical = getattr(operator.raw_operator, "is_categorical_", None)
            if categorical is not None and bool(np.any(categorical)):
                raise NotCompilable("gradient boosting with native categorical splits")
            convert(scope, operator, _PlainInts(container))

        return converter

    for cls, alias, shape, convert in (
        (
            HistGradientBoostingClassifier,
            "SklearnHistGradientBoostingClassifier",
            calculate_tree_classifier_output_shapes,
            convert_sklearn_random_forest_classifier,
        ),
        (
            HistGradientBoostingRegressor,
            "SklearnHistGradientBoostingRegressor",
            calculate_tree_regressor_output_shapes,
            convert_sklearn_random_forest_regressor_converter,
        ),
    ):
        options = {
            "zipmap": [True, False, "columns"],
            "raw_scores": [True, False],
            "nocl": [True, False],
        }
        register(
            cls,
            alias,
            shape,
            wrap(convert),
            options=options if cls is HistGradientBoostingClassifier else None,
            overwrite=True,
        )


_INTEGERS = (np.integer, np.bool_, bool)


class _PlainInts:
    """A converter container whose `add_node` turns numpy integers and booleans in list
    attributes into Python ints; everything else goes to the real container."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, _INTEGERS) for v in value):
                attrs[key] = [int(v) if isinstance(v, _INTEGERS) else v for v in value]
        return self._container.add_node(*args, **attrs)


_registered = False
_register_lock = threading.Lock()


def _register_converters() -> None:
    """Once per process: our one-hot converter, and onnxmltools' LightGBM converters."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from skl2onnx import update_registered_converter

        update_registered_converter(
            _OneHotForOnnx, "SubmitterOneHotEncoder", _shape_one_hot, _convert_one_hot
        )
        update_registered_converter(
            _OrdinalForOnnx, "SubmitterOrdinalEncoder", _shape_ordinal, _convert_ordinal
        )
        _register_hist_gradient_boosting(update_registered_converter)
        try:
            import lightgbm
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
                convert_lightgbm,
            )
            from skl2onnx.common.shape_calculator import (
                calculate_linear_classifier_output_shapes,
                calculate_linear_regressor_output_shapes,
            )
        except Exception:  # LightGBM absent or broken: its models are served by sklearn
            pass
        else:
            update_registered_converter(
                lightgbm.LGBMClassifier,
                "LightGbmLGBMClassifier",
                calculate_linear_classifier_output_shapes,
                convert_lightgbm,
                options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
            )
            update_registered_converter(
                lightgbm.LGBMRegressor,
                "LightGbmLGBMRegressor",
                calculate_linear_regressor_output_shapes,
                convert_lightgbm,
                options={"split": None},
            )
        _registered = True


def serving_summary(serving: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(path, reason) of a version's serving record; versions from before it are sklearn."""
    if not serving:
        return "sklearn", "registered before compiled serving existed"
    path = str(serving.get("path", "sklearn"))
    reason = serving.get("reason")
    return path, (str(reason) if reason is not None else None)
