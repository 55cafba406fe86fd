"""The training job's plots: made by a real train job, listed on the version, served as PNG."""

from __future__ import annotations

import struct
import tempfile
import uuid
from pathlib import Path

from submitter.registry.service import register_version
from tests.api.test_train_predict import _binary_data, _train, _upload
from tests.conftest import Stack

BINARY_PLOTS = [
    "plots/confusion.png",
    "plots/cv_scores.png",
    "plots/importance.png",
    "plots/pr.png",
    "plots/roc.png",
]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_a_train_job_makes_plots_the_version_lists_and_the_api_serves(stack: Stack) -> None:
    name = f"plots-{uuid.uuid4().hex[:6]}"
    dataset = _upload(stack, _binary_data(rows=200), f"{name}-data")
    done = _train(stack, dataset["id"], name)
    assert done["state"] == "succeeded", done
    assert done["result"]["plots"] == BINARY_PLOTS
    logs = stack.logs(done["id"])
    assert any(line.startswith("plots: 5 made in ") for line in logs), logs
    assert not any("skipped" in line or "no plots" in line for line in logs), logs

    viewer = stack.headers("viewer")
    version = stack.api.get(f"/api/v1/models/{name}/versions/1", headers=viewer).json()
    assert version["plots"] == BINARY_PLOTS and version["job_id"] == done["id"]
    listed = stack.api.get(f"/api/v1/models/{name}/versions", headers=viewer).json()
    assert [v["plots"] for v in listed["items"]] == [BINARY_PLOTS]

    for plot in version["plots"]:
        response = stack.api.get(f"/api/v1/jobs/{done['id']}/artifacts/{plot}", headers=viewer)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert int(response.headers["content-length"]) == len(response.content)
        assert _png_size(response.content) == (800, 600)
        assert len(response.content) > 10_000  # drawn, not an empty canvas


def test_a_version_without_plot_artifacts_lists_none(stack: Stack) -> None:
    """Versions registered before plots were made (no such artifacts) have `plots: []`."""
    name = f"noplots-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.skops"
        model_file.write_bytes(b"not loaded by this test")
        register_version(
            stack.runtime,
            name=name,
            model_file=model_file,
            fields={
                "task": "classification",
                "algorithm": "lr",
                "metric": "AUC",
                "metrics": {},
                "leaderboard": [],
                "params": {},
                "feature_schema": [],
                "classes": ["no", "yes"],
                "target": "label",
                "dataset_id": None,
                "job_id": None,
            },
        )
    version = stack.api.get(
        f"/api/v1/models/{name}/versions/1", headers=stack.headers("viewer")
    ).json()
    assert version["plots"] == []
