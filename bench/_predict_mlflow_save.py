"""Run by `bench/predict.py` in the MLflow virtual environment: skops file → MLflow model.

    python _predict_mlflow_save.py MODEL.skops EXAMPLE.json OUT_DIR

Loads the very pipeline Submitter serves (skops, trusting the types the file names: it is the
file the benchmark just wrote) and saves it with `mlflow.sklearn.save_model`, with a signature
inferred from the example rows (`{"columns": [...], "data": [[...]]}`, what clients send), as
MLflow's docs recommend, in MLflow's default format (skops, since MLflow 3). No retraining,
so all three servers hold the same fitted model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import skops.io as sio
from mlflow.models import infer_signature


def main(model_file: str, example_file: str, out_dir: str) -> None:
    trusted = sio.get_untrusted_types(file=model_file)
    pipeline = sio.load(model_file, trusted=trusted)
    example = json.loads(Path(example_file).read_text())
    frame = pd.DataFrame(example["data"], columns=example["columns"])
    signature = infer_signature(frame, pipeline.predict(frame))
    # MLflow 3 saves sklearn models with skops by default and, like us, wants the extra types
    # (here numpy.dtype) trusted explicitly; the file's serialization does not matter once the
    # server has loaded it.
    mlflow.sklearn.save_model(pipeline, out_dir, signature=signature, skops_trusted_types=trusted)


if __name__ == "__main__":
    main(*sys.argv[1:4])
