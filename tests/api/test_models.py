"""The model registry through the API: versions, aliases and how a version is resolved."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from submitter.registry import service
from tests.conftest import Stack


def _register(stack: Stack, name: str, tmp_path: Path, auc: float) -> Any:
    model_file = tmp_path / f"{uuid.uuid4().hex}.skops"
    model_file.write_bytes(b"not a real model; the registry only stores it")
    return service.register_version(
        stack.runtime,
        name=name,
        model_file=model_file,
        fields={
            "task": "classification",
            "algorithm": "hgb",
            "metric": "AUC",
            "metrics": {"AUC": auc},
            "leaderboard": [{"model": "hgb", "AUC": auc}],
            "params": {},
            "feature_schema": [{"name": "x", "dtype": "float64"}],
            "classes": [0, 1],
            "target": "y",
        },
    )


def test_versions_aliases_and_resolution(stack: Stack, tmp_path: Path) -> None:
    name = f"churn-{uuid.uuid4().hex[:6]}"
    first = _register(stack, name, tmp_path, 0.71)
    second = _register(stack, name, tmp_path, 0.74)
    assert (first.version, second.version) == (1, 2)
    assert stack.runtime.store.exists(second.storage_key)
    viewer, user = stack.headers("viewer"), stack.headers("user")

    model = stack.api.get(f"/api/v1/models/{name}", headers=viewer).json()
    assert model["latest_version"] == 2 and model["aliases"] == {}
    versions = stack.api.get(f"/api/v1/models/{name}/versions", headers=viewer).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    one = stack.api.get(f"/api/v1/models/{name}/versions/1", headers=viewer).json()
    assert one["metrics"] == {"AUC": 0.71}
    # Default: the latest version, until `production` points somewhere.
    assert service.resolve_version(stack.runtime, name).version == 2

    moved = stack.api.put(
        f"/api/v1/models/{name}/aliases/production", json={"version": 1}, headers=user
    )
    assert moved.status_code == 200, moved.text
    assert service.resolve_version(stack.runtime, name).version == 1
    stack.api.put(f"/api/v1/models/{name}/aliases/production", json={"version": 2}, headers=user)
    assert service.resolve_version(stack.runtime, name).version == 2
    assert service.resolve_version(stack.runtime, name, version=1).version == 1
    listed = stack.api.get("/api/v1/models", headers=viewer).json()
    assert {"name": name, "latest_version": 2, "aliases": {"production": 2}}.items() <= next(
        m for m in listed["items"] if m["name"] == name
    ).items()


def test_registry_errors(stack: Stack, tmp_path: Path) -> None:
    name = f"err-{uuid.uuid4().hex[:6]}"
    _register(stack, name, tmp_path, 0.5)
    viewer, user = stack.headers("viewer"), stack.headers("user")
    assert stack.api.get("/api/v1/models/nope-x", headers=viewer).status_code == 404
    assert stack.api.get(f"/api/v1/models/{name}/versions/9", headers=viewer).status_code == 404
    missing = stack.api.put(
        f"/api/v1/models/{name}/aliases/production", json={"version": 9}, headers=user
    )
    assert missing.status_code == 404
    bad_alias = stack.api.put(
        f"/api/v1/models/{name}/aliases/Prod!", json={"version": 1}, headers=user
    )
    assert bad_alias.status_code == 422
    bad_body = stack.api.put(
        f"/api/v1/models/{name}/aliases/staging", json={"version": 0}, headers=user
    )
    assert bad_body.status_code == 422
    forbidden = stack.api.put(
        f"/api/v1/models/{name}/aliases/staging", json={"version": 1}, headers=viewer
    )
    assert forbidden.status_code == 403


def test_not_found_messages_keep_their_quotes(stack: Stack) -> None:
    response = stack.api.get("/api/v1/models/credti", headers=stack.headers("viewer"))
    assert response.status_code == 404
    assert response.json()["detail"] == "no model named 'credti'"
