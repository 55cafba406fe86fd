"""PyCaret's side of bench/train_suite.py, run by the PyCaret venv's python (not Submitter's).

    python _train_suite_pycaret.py WORKDIR

WORKDIR holds `train.csv` (the rows Submitter cross-validates on, in its order),
`holdout.csv` (its holdout rows) and `spec.json` (target, task, metric, and `test_fold`: the
fold number of each training row, Submitter's folds). The clock runs over `setup` +
`compare_models` only (imports and the CSV reads excluded); the result is one line,
`BENCH_RESULT {json}`, on stdout.
"""

import json
import sys
import time
from pathlib import Path

import pandas as pd
from sklearn.model_selection import PredefinedSplit

MARKER = "BENCH_RESULT "


def main(workdir: Path) -> None:
    spec = json.loads((workdir / "spec.json").read_text())
    if spec["task"] == "regression":
        from pycaret.regression import compare_models, pull, setup
    else:
        from pycaret.classification import compare_models, pull, setup
    train = pd.read_csv(workdir / "train.csv")
    holdout = pd.read_csv(workdir / "holdout.csv")
    # Submitter's folds, row for row: PyCaret keeps `data` in the given order when
    # `test_data` is passed, and PredefinedSplit yields fold 0, 1, ... as validation sets.
    folds = PredefinedSplit(spec["test_fold"])
    started = time.time()
    setup(
        train,
        target=spec["target"],
        test_data=holdout,
        fold_strategy=folds,
        index=False,  # RangeIndex over train + holdout, in the given order
        session_id=123,
        verbose=False,
        html=False,
    )
    compare_models(sort=spec["metric"], round=6, verbose=False)  # its table rounds to 4 by default
    elapsed = time.time() - started
    board = pull()
    metric = spec["metric"]
    rows = [
        [f"{index} ({name})", float(value), float(seconds)]
        for index, name, value, seconds in zip(
            board.index, board["Model"], board[metric], board["TT (Sec)"], strict=True
        )
    ]
    best = max(rows, key=lambda row: row[1])
    result = {"elapsed": elapsed, "best_model": best[0], "best": best[1], "leaderboard": rows}
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
