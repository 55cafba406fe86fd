"""`predict` (batch): a registered model over a dataset → a new dataset with predictions.

The dataset is read one Parquet batch at a time and the output written the same way, so
memory stays bounded whatever the dataset's size. Rows are checked against the model's
feature schema as in real-time prediction (extra columns are kept, not fed to the model).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from submitter.jobs.context import JobContext
from submitter.jobs.registry import JobKind


class PredictSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1)
    alias: str | None = None
    dataset: str = Field(min_length=1, description="Dataset id, name or name@version.")
    output_name: str | None = Field(default=None, description="Default: <dataset>-predictions.")
    batch_rows: int = Field(default=50_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _version_or_alias(self) -> PredictSpec:
        if self.version is not None and self.alias is not None:
            raise ValueError("give version or alias, not both")
        return self


def run(spec: PredictSpec, ctx: JobContext) -> dict[str, Any]:
    from submitter.datasets.service import create, open_parquet, resolve, validate_name
    from submitter.ml import check_rows
    from submitter.registry.predictors import load_version
    from submitter.registry.service import resolve_version

    runtime = ctx.runtime
    model = resolve_version(runtime, spec.model_name, version=spec.version, alias=spec.alias)
    dataset = resolve(runtime, spec.dataset)
    output_name = validate_name(spec.output_name or f"{dataset.name}-predictions")
    pipeline = load_version(runtime, model)
    parquet = open_parquet(runtime, dataset)
    ctx.log(f"{spec.model_name} v{model.version} over {dataset.name}@{dataset.version}")
    classes = [str(c) for c in (model.classes or [])]
    probabilities = model.task == "classification" and hasattr(pipeline, "predict_proba")
    rows = 0
    with tempfile.TemporaryDirectory(prefix="submitter-predict-") as tmp:
        out = Path(tmp) / "predictions.parquet"
        writer: pq.ParquetWriter | None = None
        try:
            for batch in parquet.iter_batches(batch_size=spec.batch_rows):
                ctx.check_cancelled()
                table = pa.Table.from_batches([batch])
                frame = check_rows(model.feature_schema, table, allow_extra=True)
                columns = {"prediction": pa.array(pipeline.predict(frame).tolist())}
                if probabilities:
                    proba = pipeline.predict_proba(frame)
                    for index, label in enumerate(classes):
                        columns[f"probability_{label}"] = pa.array(proba[:, index])
                for name, values in columns.items():
                    table = table.append_column(name, values)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                writer.write_table(table)
                rows += table.num_rows
                ctx.progress(rows / max(1, dataset.row_count), f"{rows} rows")
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"dataset {dataset.name}@{dataset.version} has no rows")
        digest = hashlib.sha256()
        with out.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        created, _ = create(
            runtime,
            name=output_name,
            upload=out,
            sha256=digest.hexdigest(),
            upload_bytes=out.stat().st_size,
            owner=f"job {ctx.job_id}",
            file_format="parquet",
        )
    return {
        "dataset": created.id,
        "name": created.name,
        "version": created.version,
        "rows": rows,
        "model_name": spec.model_name,
        "model_version": model.version,
    }


KIND = JobKind(
    name="predict",
    spec_model=PredictSpec,
    run=run,
    description="Batch prediction: model over dataset → new dataset with predictions.",
    dataset_fields=("dataset",),
)
