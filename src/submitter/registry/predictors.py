"""Real-time predictions: loaded model versions cached in the API process.

The cache is keyed by version id, so moving an alias needs no invalidation: each request
resolves its version and the new version is loaded on first use. A version compiled at
registration (`metrics["serving"]["path"] == "onnx"`, see `submitter.ml.compiled`) is loaded
as an ONNX Runtime session from its `model.onnx` and never touches scikit-learn or pandas;
any other is the skops pipeline, as before. The cache is bounded by an estimate of memory
(file size times a factor, a skops file being about the size of the objects it holds), least
recently used first out.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from submitter.db.models import ModelVersion
from submitter.registry.batching import Batcher
from submitter.registry.service import MODELS_TOPIC, compiled_key, resolve_version
from submitter.runtime import Runtime
from submitter.ttlcache import TTLCache

RESOLVE_TTL = 0.5
"""Seconds a resolved (model, version or alias) is reused: an alias moved or a version
registered in another process is served within this long; in this process at once."""

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


@dataclass(frozen=True)
class Served:
    """A loaded version: its compiled model, or else its scikit-learn pipeline."""

    compiled: Any | None  # submitter.ml.compiled.CompiledModel
    pipeline: Any | None
    size: int


def load_served(runtime: Runtime, version: ModelVersion) -> Served:
    """The compiled model when the version passed its parity check, else the pipeline."""
    serving = (version.metrics or {}).get("serving") or {}
    if serving.get("path") == "onnx":
        from submitter.ml.compiled import CompiledModel

        data = runtime.store.read_bytes(compiled_key(version))
        model = CompiledModel(
            data,
            version.feature_schema,
            version.task,
            version.classes,
            probabilities=bool(serving.get("probabilities")),
        )
        return Served(model, None, len(data))
    return Served(None, load_version(runtime, version), version.size)


class PredictorCache:
    def __init__(self, runtime: Runtime, max_bytes: int) -> None:
        self.runtime = runtime
        self.max_bytes = max_bytes
        self.resolved: TTLCache[ModelVersion] = TTLCache(MODELS_TOPIC, RESOLVE_TTL)
        self.batcher = Batcher()
        self._models: OrderedDict[str, tuple[Served, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def peek(self, version: ModelVersion) -> Served | None:
        """The loaded version if it is in the cache (no I/O: callable on the event loop)."""
        with self._lock:
            found = self._models.get(version.id)
            if found is None:
                return None
            self._models.move_to_end(version.id)
            return found[0]

    def get(self, version: ModelVersion) -> Served:
        with self._lock:
            if version.id in self._models:
                self._models.move_to_end(version.id)
                return self._models[version.id][0]
            loading = self._loading.setdefault(version.id, threading.Lock())
        with loading:  # one load per version, however many requests wait for it
            with self._lock:
                if version.id in self._models:
                    return self._models[version.id][0]
            served = self._load(version)
            with self._lock:
                self._models[version.id] = (served, served.size * MEMORY_FACTOR)
                self._loading.pop(version.id, None)
                self._evict()
            return served

    def _load(self, version: ModelVersion) -> Served:
        return load_served(self.runtime, version)

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
    model_version = resolve_version(runtime, name, version=version, alias=alias)
    return predict_version(model_version, cache.get(model_version), body.as_rows())


def predict_version(
    model_version: ModelVersion, served: Served, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Validate `rows` against the version's schema and predict them (SchemaError if bad)."""
    from submitter.ml import check_rows
    from submitter.ml.features import check_columns

    if served.compiled is not None:
        compiled = served.compiled
        labels, probabilities = compiled.run(
            compiled.feed(check_columns(model_version.feature_schema, rows))
        )
        return _compiled_result(model_version, labels, probabilities)
    result: dict[str, Any] = {"model": model_version.model_name, "version": model_version.version}
    frame = check_rows(model_version.feature_schema, rows)
    pipeline: Any = served.pipeline
    # Preprocess once for both calls: Pipeline.predict and .predict_proba would each run
    # every transformer again, which is most of the cost of a small request. A one-step
    # pipeline (a blend: each member keeps its own preprocessing) has nothing to run first.
    features = pipeline[:-1].transform(frame) if len(pipeline) > 1 else frame
    estimator = pipeline[-1]
    result["predictions"] = estimator.predict(features).tolist()
    if model_version.task == "classification" and hasattr(estimator, "predict_proba"):
        result["classes"] = model_version.classes
        result["probabilities"] = estimator.predict_proba(features).tolist()
    return result


async def predict_async(
    runtime: Runtime,
    cache: PredictorCache,
    name: str,
    body: PredictIn,
    *,
    version: int | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """`predict` for the API's event loop: with the version resolved and loaded (cached), a
    compiled model is validated and run right here, micro-batched with the requests for the
    same version already waiting; database reads, loads and scikit-learn go to the thread
    pool, as a plain `def` route would."""
    from fastapi.concurrency import run_in_threadpool

    from submitter.ml.features import check_columns

    key = (name, version, alias)
    hit, model_version = cache.resolved.lookup(key)
    if not hit:
        model_version = cache.resolved.store(
            key,
            await run_in_threadpool(resolve_version, runtime, name, version=version, alias=alias),
        )
    assert model_version is not None
    served: Served | None = cache.peek(model_version)
    if served is None:
        served = await run_in_threadpool(cache.get, model_version)
    rows = body.as_rows()
    compiled = served.compiled
    if compiled is None:
        return await run_in_threadpool(predict_version, model_version, served, rows)
    feed = compiled.feed(check_columns(model_version.feature_schema, rows))
    labels, probabilities = await cache.batcher.run(model_version.id, compiled, feed, len(rows))
    return _compiled_result(model_version, labels, probabilities)


def _compiled_result(
    model_version: ModelVersion, labels: list[Any], probabilities: Any | None
) -> dict[str, Any]:
    """The response body of a compiled model's answer (sync and batched paths alike)."""
    result: dict[str, Any] = {
        "model": model_version.model_name,
        "version": model_version.version,
        "predictions": labels,
    }
    if probabilities is not None:
        result["classes"] = model_version.classes
        result["probabilities"] = probabilities.tolist()
    return result
