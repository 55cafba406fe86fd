"""Training, the registry and predictions end to end, with real workers, on every backend."""

from __future__ import annotations

import io
import time
import uuid
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import Stack

FAST = {"models": ["lr", "dt"], "folds": 3}


def _binary_data(rows: int = 300, seed: int = 7) -> pa.Table:
    """A learnable binary problem with a string category and missing values."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    city = rng.choice(["oulu", "turku", "espoo"], size=rows)
    score = 1.5 * x1 - x2 + (city == "oulu") * 1.0 + rng.normal(scale=0.5, size=rows)
    x2_with_gaps = [None if i % 17 == 0 else float(v) for i, v in enumerate(x2)]
    return pa.table(
        {
            "x1": x1,
            "x2": pa.array(x2_with_gaps, pa.float64()),
            "city": city,
            "label": np.where(score > 0, "yes", "no"),
        }
    )


def _upload(stack: Stack, table: pa.Table, name: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    response = stack.api.post(
        "/api/v1/datasets",
        data={"name": name},
        files={"file": ("data.parquet", buffer.getvalue())},
        headers=stack.headers("user"),
    )
    assert response.status_code == 201, response.text
    dataset: dict[str, Any] = response.json()
    return dataset


def _train(stack: Stack, dataset: str, model: str, **extra: Any) -> dict[str, Any]:
    job = stack.submit(
        "train",
        spec={"dataset": dataset, "target": "label", "model_name": model, **FAST, **extra},
    )
    return stack.wait(job["id"], timeout=180)


def test_train_register_predict_and_batch_predict(stack: Stack) -> None:
    name = f"churn-{uuid.uuid4().hex[:6]}"
    data = _binary_data()
    dataset = _upload(stack, data, f"{name}-data")
    done = _train(stack, dataset["name"], name)
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["version"] == 1 and result["task"] == "classification"
    assert result["metric"] == "AUC"
    # The two models and their blend, scored on the same folds from their out-of-fold rows.
    assert {row["model"] for row in result["leaderboard"]} == {"lr", "dt", "blend"}
    for metric in ("Accuracy", "AUC", "Recall", "Precision", "F1", "Kappa", "MCC"):
        assert metric in result["leaderboard"][0]
    assert result["cv"]["AUC"] > 0.8
    artifacts = stack.api.get(
        f"/api/v1/jobs/{done['id']}/artifacts", headers=stack.headers("viewer")
    ).json()
    assert [a["name"] for a in artifacts["items"]] == ["leaderboard.json", *result["plots"]]

    version = stack.api.get(
        f"/api/v1/models/{name}/versions/1", headers=stack.headers("viewer")
    ).json()
    assert version["dataset_id"] == dataset["id"] and version["job_id"] == done["id"]
    assert {f["name"] for f in version["feature_schema"]} == {"x1", "x2", "city"}

    rows = [
        {"x1": 2.0, "x2": -1.0, "city": "oulu"},
        {"x1": -2.0, "x2": 1.0, "city": "helsinki"},  # a category never seen: tolerated
        {"x1": 0.1, "x2": None, "city": None},  # missing values: imputed
    ]
    predicted = stack.api.post(
        f"/api/v1/models/{name}/predict", json={"rows": rows}, headers=stack.headers("viewer")
    )
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    assert body["version"] == 1 and body["classes"] == ["no", "yes"]
    assert body["predictions"][:2] == ["yes", "no"]
    assert all(abs(sum(p) - 1) < 1e-9 for p in body["probabilities"])
    split = stack.api.post(
        f"/api/v1/models/{name}/predict",
        json={
            "columns": ["x1", "x2", "city"],
            "data": [[r["x1"], r["x2"], r["city"]] for r in rows],
        },
        headers=stack.headers("viewer"),
    ).json()
    assert split["predictions"] == body["predictions"]

    batch = stack.submit(
        "predict", spec={"model_name": name, "dataset": dataset["id"], "batch_rows": 100}
    )
    batch_done = stack.wait(batch["id"], timeout=120)
    assert batch_done["state"] == "succeeded", batch_done
    out = batch_done["result"]
    assert out["rows"] == data.num_rows
    preview = stack.api.get(
        f"/api/v1/datasets/{out['dataset']}/preview",
        params={"limit": 1000},
        headers=stack.headers("viewer"),
    ).json()
    columns = preview["columns"]
    assert columns[-3:] == ["prediction", "probability_no", "probability_yes"]
    first_rows = [dict(zip(columns, r, strict=True)) for r in preview["rows"][:50]]
    realtime = stack.api.post(
        f"/api/v1/models/{name}/predict",
        json={"rows": [{k: r[k] for k in ("x1", "x2", "city")} for r in first_rows]},
        headers=stack.headers("viewer"),
    ).json()
    assert realtime["predictions"] == [r["prediction"] for r in first_rows]
    # Real time is served by the compiled (float32) model, the batch job by scikit-learn:
    # equal to the parity check's tolerance (submitter.ml.compiled.PROBABILITY_TOLERANCE).
    assert np.allclose(
        [p[1] for p in realtime["probabilities"]],
        [r["probability_yes"] for r in first_rows],
        rtol=0,
        atol=1e-4,
    )
    version_out = stack.api.get(
        f"/api/v1/models/{name}/versions/1", headers=stack.headers("viewer")
    ).json()
    assert version_out["serving"] in ("onnx", "sklearn"), version_out
    if result["best_model"] in ("lr", "dt"):  # both convert: the compiled path serves
        assert version_out["serving"] == "onnx", version_out["serving_reason"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"rows": [{"x1": 1.0, "x2": 2.0}]}, ["body", "rows[0]", "city"]),
        (
            {"rows": [{"x1": 1.0, "x2": 2.0, "city": "oulu", "extra": 1}]},
            ["body", "rows[0]", "extra"],
        ),
        ({"rows": [{"x1": "abc", "x2": 2.0, "city": "oulu"}]}, ["body", "rows[0]", "x1"]),
        ({"columns": ["x1"], "data": [[1.0, 2.0]]}, ["body"]),
        ({"rows": []}, ["body", "rows"]),
    ],
)
def test_predict_refuses_rows_that_do_not_fit_the_schema(
    stack: Stack, body: dict[str, Any], loc: list[str]
) -> None:
    name = _trained_model(stack)
    response = stack.api.post(
        f"/api/v1/models/{name}/predict", json=body, headers=stack.headers("viewer")
    )
    assert response.status_code == 422, response.text
    locs = [error["loc"][: len(loc)] for error in response.json()["detail"]]
    assert loc in locs, locs


_TRAINED: dict[str, str] = {}


def _trained_model(stack: Stack) -> str:
    """One small model per backend, shared by the schema tests."""
    key = stack.backend.name
    if key not in _TRAINED:
        name = f"schema-{uuid.uuid4().hex[:6]}"
        dataset = _upload(stack, _binary_data(rows=120), f"{name}-data")
        assert _train(stack, dataset["id"], name)["state"] == "succeeded"
        _TRAINED[key] = name
    return _TRAINED[key]


def test_alias_switch_reaches_predictions_at_once(stack: Stack) -> None:
    name = f"alias-{uuid.uuid4().hex[:6]}"
    dataset = _upload(stack, _binary_data(), f"{name}-data")
    assert _train(stack, dataset["id"], name)["state"] == "succeeded"
    assert _train(stack, dataset["id"], name, models=["dt"])["state"] == "succeeded"
    rows = {"rows": [{"x1": 0.3, "x2": 0.1, "city": "turku"}]}
    viewer, user = stack.headers("viewer"), stack.headers("user")

    def served() -> int:
        response = stack.api.post(f"/api/v1/models/{name}/predict", json=rows, headers=viewer)
        assert response.status_code == 200, response.text
        version: int = response.json()["version"]
        return version

    assert served() == 2  # no production alias: the latest
    stack.api.put(f"/api/v1/models/{name}/aliases/production", json={"version": 1}, headers=user)
    assert served() == 1
    stack.api.put(f"/api/v1/models/{name}/aliases/production", json={"version": 2}, headers=user)
    assert served() == 2
    pinned = stack.api.post(
        f"/api/v1/models/{name}/predict", params={"version": 1}, json=rows, headers=viewer
    )
    assert pinned.json()["version"] == 1
    stack.api.put(f"/api/v1/models/{name}/aliases/staging", json={"version": 1}, headers=user)
    staged = stack.api.post(
        f"/api/v1/models/{name}/predict", params={"alias": "staging"}, json=rows, headers=viewer
    )
    assert staged.json()["version"] == 1
    missing = stack.api.post(
        f"/api/v1/models/{name}/predict", params={"alias": "canary"}, json=rows, headers=viewer
    )
    assert missing.status_code == 404

    # Moved by another process (a plain UPDATE: no invalidation reaches this API's cache):
    # served within RESOLVE_TTL, the staleness the cache promises (< 1 s).
    from sqlalchemy import update

    from submitter.db.models import ModelAlias
    from submitter.registry.predictors import RESOLVE_TTL

    assert served() == 2
    with stack.runtime.transaction() as session:
        session.execute(
            update(ModelAlias)
            .where(ModelAlias.model_name == name, ModelAlias.alias == "production")
            .values(version=1)
        )
    time.sleep(RESOLVE_TTL + 0.05)
    assert served() == 1


def test_two_trainings_of_one_name_run_one_after_the_other(stack: Stack) -> None:
    name = f"locked-{uuid.uuid4().hex[:6]}"
    dataset = _upload(stack, _binary_data(rows=400), f"{name}-data")
    spec = {"dataset": dataset["id"], "target": "label", "model_name": name, **FAST}
    first = stack.submit("train", spec=spec)
    second = stack.submit("train", spec=spec)
    done = [stack.wait(job["id"], timeout=240) for job in (first, second)]
    assert [d["state"] for d in done] == ["succeeded", "succeeded"]
    assert sorted(d["result"]["version"] for d in done) == [1, 2]

    def held(job_id: str) -> tuple[datetime, datetime]:
        lines = stack.api.get(
            f"/api/v1/jobs/{job_id}/logs", headers=stack.headers("viewer")
        ).json()["items"]
        start = next(line["at"] for line in lines if "holding the training lock" in line["message"])
        end = next(line["at"] for line in lines if line["message"].startswith("registered "))
        return datetime.fromisoformat(start), datetime.fromisoformat(end)

    (a_start, a_end), (b_start, b_end) = held(first["id"]), held(second["id"])
    assert a_end <= b_start or b_end <= a_start, "the two trainings overlapped"


def test_bad_train_specs_are_422(stack: Stack) -> None:
    base = {"dataset": "whatever", "target": "label", "model_name": "m"}
    for spec, field in (
        ({**base, "models": ["nope"]}, "models"),
        ({**base, "folds": 1}, "folds"),
        ({**base, "model_name": "../x"}, "model_name"),
        ({**base, "task": "clustering"}, "task"),
        ({**base, "seed": 2**32}, "seed"),
        ({**base, "seed": -1}, "seed"),
        ({**base, "metric": "happiness"}, "metric"),
        ({**base, "task": "regression", "metric": "AUC"}, "metric"),
    ):
        response = stack.api.post(
            "/api/v1/jobs", json={"kind": "train", "spec": spec}, headers=stack.headers("user")
        )
        assert response.status_code == 422, response.text
        assert ["body", "spec", field] in [e["loc"][:3] for e in response.json()["detail"]]


def test_a_target_that_is_not_a_column_is_422_at_submit(stack: Stack) -> None:
    """The dataset's schema is known at submit: the worker never sees such a job."""
    name = f"cols-{uuid.uuid4().hex[:8]}"
    _upload(stack, _binary_data(rows=50), name)
    spec = {"dataset": name, "target": "lable", "model_name": name}
    response = stack.api.post(
        "/api/v1/jobs", json={"kind": "train", "spec": spec}, headers=stack.headers("user")
    )
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "spec", "target"]
    assert "x1, x2, city, label" in error["msg"]
