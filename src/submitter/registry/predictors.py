"""Real-time predictions: loaded model versions cached in the API process.

The cache is keyed by version id, so moving an alias needs no invalidation: each request
resolves its version (one indexed query) and the new version is loaded on first use. The
cache is bounded by an estimate of memory (file size times a factor, a skops file being about
the size of the objects it holds), least recently used first out.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from submitter.db.models import ModelVersion
from submitter.registry.service import resolve_version
from submitter.runtime import Runtime

MAX_ROWS = 10_000
MEMORY_FACTOR = 3


class PredictIn(BaseModel):
    """Either `rows` (a list of {column: value}) or `columns` + `data` (a list of lists)."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ROWS)
    columns: list[str] | None = None
    data: list[list[Any]] | None = Field(default=None, max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _one_shape(self) -> PredictIn:
        if self.rows is not None and (self.columns is not None or self.data is not None):
            raise ValueError("give either rows, or columns and data, not both")
        if self.rows is None and (self.columns is None or self.data is None):
            raise ValueError("give rows, or columns and data")
        if self.data is not None and self.columns is not None:
            width = len(self.columns)
            for index, row in enumerate(self.data):
                if len(row) != width:
                    raise ValueError(f"data[{index}] has {len(row)} values for {width} columns")
        return self

    def as_rows(self) -> list[dict[str, Any]]:
        if self.rows is not None:
            return self.rows
        assert self.columns is not None and self.data is not None
        return [dict(zip(self.columns, row, strict=True)) for row in self.data]


def load_version(runtime: Runtime, version: ModelVersion) -> Any:
    """Load a version's pipeline from the store (skops, trusted types only)."""
    from submitter.ml import load

    local = runtime.store.local_path(version.storage_key)
    if local is not None:
        return load(local)
    with tempfile.TemporaryDirectory(prefix="submitter-model-") as tmp:
        return load(runtime.store.download(version.storage_key, Path(tmp) / "model.skops"))


class PredictorCache:
    def __init__(self, runtime: Runtime, max_bytes: int) -> None:
        self.runtime = runtime
        self.max_bytes = max_bytes
        self._models: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, version: ModelVersion) -> Any:
        with self._lock:
            if version.id in self._models:
                self._models.move_to_end(version.id)
                return self._models[version.id][0]
            loading = self._loading.setdefault(version.id, threading.Lock())
        with loading:  # one load per version, however many requests wait for it
            with self._lock:
                if version.id in self._models:
                    return self._models[version.id][0]
            pipeline = self._load(version)
            with self._lock:
                self._models[version.id] = (pipeline, version.size * MEMORY_FACTOR)
                self._loading.pop(version.id, None)
                self._evict()
            return pipeline

    def _load(self, version: ModelVersion) -> Any:
        return load_version(self.runtime, version)

    def _evict(self) -> None:
        total = sum(size for _, size in self._models.values())
        while total > self.max_bytes and len(self._models) > 1:
            _, (_, size) = self._models.popitem(last=False)
            total -= size


def predict(
    runtime: Runtime,
    cache: PredictorCache,
    name: str,
    body: PredictIn,
    *,
    version: int | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    from submitter.ml import check_rows

    model_version = resolve_version(runtime, name, version=version, alias=alias)
    frame = check_rows(model_version.feature_schema, body.as_rows())
    pipeline = cache.get(model_version)
    # Preprocess once for both calls: Pipeline.predict and .predict_proba would each run
    # every transformer again, which is most of the cost of a small request.
    features = pipeline[:-1].transform(frame)
    estimator = pipeline[-1]
    result: dict[str, Any] = {
        "model": name,
        "version": model_version.version,
        "predictions": estimator.predict(features).tolist(),
    }
    if model_version.task == "classification" and hasattr(estimator, "predict_proba"):
        result["classes"] = model_version.classes
        result["probabilities"] = estimator.predict_proba(features).tolist()
    return result
