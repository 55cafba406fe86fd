"""Preprocessing inside the saved scikit-learn Pipeline, so `predict` takes raw rows.

Numbers (and booleans, as 0/1) are median-imputed, and standardised only for models whose fit
depends on scale (linear, kNN, SVM). Strings are most-frequent-imputed and one-hot encoded,
with rare categories pooled (`min_frequency`) and the width per column capped
(`max_categories`) so an ID-like column cannot blow up the matrix. Categories never seen in
training go to the pooled "infrequent" column when there is one, else to all zeros.

The boosters (HGB, LightGBM) get neither imputation nor one-hot: they route NaN natively
(missingness often carries signal), and string columns are ordinal-coded and declared
categorical, which splits on category sets instead of hundreds of sparse columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from submitter.ml.features import Schema
from submitter.ml.models import ModelSpec

MIN_FREQUENCY = 10
"""A category seen in fewer training rows than this is pooled with the other rare ones."""

MAX_CATEGORIES = 32
"""Output columns per string feature at most (incl. the pooled one); also keeps category codes
below the number of bins HGB uses (`max_bins`), which native categories require."""


def build_pipeline(
    schema: Schema, spec: ModelSpec, task: str, n_rows: int, seed: int, n_classes: int = 2
) -> tuple[Pipeline, dict[str, Any]]:
    """An unfitted Pipeline `prep -> model` for `schema`, and the extra keyword arguments its
    `fit` needs (LightGBM takes its categorical columns at fit time, not in its constructor).
    `n_classes`: the target's classes (boosters grow a tree per class and round).

    The `prep` step depends only on the schema and `spec.prep`: cross-validation fits it once
    per fold and kind and shares it among the models of that kind (`training._Preprocessed`).
    """
    numeric = [f["name"] for f in schema if f["dtype"] != "string"]
    strings = [f["name"] for f in schema if f["dtype"] == "string"]
    model = spec.build(task, n_rows, seed, n_classes)
    fit_params: dict[str, Any] = {}
    if spec.prep == "native":
        prep = _native(numeric, strings)
        categorical = list(range(len(numeric), len(numeric) + len(strings)))
        fit_params = _declare_categorical(model, categorical, len(numeric) + len(strings))
    else:
        prep = _encoded(numeric, strings, scale=spec.prep == "scaled")
    return Pipeline([("prep", prep), ("model", model)]), fit_params


def _encoded(numeric: list[str], strings: list[str], *, scale: bool) -> ColumnTransformer:
    number_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
    ]
    if scale:
        number_steps.append(("scale", StandardScaler()))
    string_steps = [
        ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
        (
            "onehot",
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=MIN_FREQUENCY,
                max_categories=MAX_CATEGORIES,
                sparse_output=False,
            ),
        ),
    ]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("numeric", Pipeline(number_steps), numeric))
    if strings:
        parts.append(("strings", Pipeline(string_steps), strings))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _native(numeric: list[str], strings: list[str]) -> ColumnTransformer:
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("numeric", "passthrough", numeric))
    if strings:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            min_frequency=MIN_FREQUENCY,
            max_categories=MAX_CATEGORIES,
        )
        parts.append(("strings", encoder, strings))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _declare_categorical(model: Any, columns: list[int], width: int) -> dict[str, Any]:
    """Tell a booster which output columns are categories; return its fit kwargs."""
    if not columns:
        return {}
    if "categorical_features" in model.get_params():  # HistGradientBoosting
        model.set_params(categorical_features=[i in columns for i in range(width)])
        return {}
    return {"model__categorical_feature": columns}  # LightGBM
