"""Baseline (a) of `bench/predict.py`: the smallest sensible FastAPI app serving the model.

The pipeline is loaded once at import (from `BENCH_MODEL_PATH`, the same skops file Submitter
serves) and kept in memory; `POST /predict` takes Submitter's body (`{"rows": [{...}]}`) and
answers predictions and class probabilities, as Submitter does, without a registry lookup,
authentication, schema validation or metrics. A plain `def` endpoint (run in Starlette's
thread pool), as in Submitter. Run with `uvicorn _predict_minimal_app:app --workers 1`.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

from submitter.ml import load

pipeline = load(os.environ["BENCH_MODEL_PATH"])
app = FastAPI()


class PredictIn(BaseModel):
    rows: list[dict[str, Any]]


@app.post("/predict")
def predict(body: PredictIn) -> dict[str, Any]:
    frame = pd.DataFrame(body.rows)
    return {
        "predictions": pipeline.predict(frame).tolist(),
        "probabilities": pipeline.predict_proba(frame).tolist(),
    }
