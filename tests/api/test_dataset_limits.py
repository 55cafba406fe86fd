"""Hostile datasets through the API on every backend: decompression bombs, NUL characters,
clean-up after a failed upload, and deleting a dataset a model was trained on."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from submitter.datasets import service
from submitter.db.models import Dataset
from submitter.registry.service import register_version
from tests.api.test_datasets import SMALL, unique, upload
from tests.conftest import Stack


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _bomb(cell_bytes: int) -> bytes:
    """One cell of `cell_bytes` in a file of about a thousandth of that."""
    return _parquet(pa.table({"x": ["A" * cell_bytes], "n": [1]}))


def _rows(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def _store_state(stack: Stack) -> tuple[set[str], set[str]]:
    """Object keys under datasets/, and (local store) the folders there: an empty
    `datasets/<id>/` left by a failed upload shows in the second."""
    from submitter.storage.local import LocalStore

    keys = {item.key for item in stack.runtime.store.list("datasets")}
    store = stack.runtime.store
    root = store.root / "datasets" if isinstance(store, LocalStore) else None
    folders = {p.name for p in root.iterdir()} if root is not None and root.is_dir() else set()
    return keys, folders


def _loc_and_message(response: Any) -> tuple[list[str], str]:
    detail = response.json()["detail"]
    return detail[0]["loc"], detail[0]["msg"]


# -- decompression bombs -----------------------------------------------------------------


def test_a_bomb_upload_is_refused_naming_the_limit(stack: Stack) -> None:
    before = _rows(stack), _store_state(stack)
    bomb = _bomb(4 << 20)  # over the default SUBMITTER_MAX_CELL_BYTES of 1 MiB
    assert len(bomb) < 20_000
    response = upload(stack, unique("bomb"), bomb, "bomb.parquet")
    assert response.status_code == 422, response.text
    loc, message = _loc_and_message(response)
    assert loc == ["body", "file"]
    assert "SUBMITTER_MAX_CELL_BYTES" in message
    assert (_rows(stack), _store_state(stack)) == before


def test_a_stored_dataset_over_the_limits_is_refused_by_every_reader(stack: Stack) -> None:
    """Datasets stored before the limits (or S3 objects put by hand) are never read whole:
    preview and aggregate answer 422 naming the limit, a describe job fails with it."""
    name = unique("old")
    dataset = upload(stack, name, SMALL).json()
    with_bomb = Path(stack.backend.home) / f"{name}.parquet"
    with_bomb.write_bytes(_bomb(4 << 20))
    stack.runtime.store.put_file(f"datasets/{dataset['id']}/data.parquet", with_bomb)
    viewer = stack.headers("viewer")
    for path, params in (
        ("preview", {"limit": 1}),
        ("aggregate", {"fn": "max", "column": "x"}),
    ):
        response = stack.api.get(f"/api/v1/datasets/{name}/{path}", params=params, headers=viewer)
        assert response.status_code == 422, response.text
        loc, message = _loc_and_message(response)
        assert loc == ["path", "ref"]
        assert "SUBMITTER_MAX_CELL_BYTES" in message
    job = stack.wait(stack.submit("describe", spec={"dataset": name})["id"])
    assert job["state"] == "failed"
    assert "SUBMITTER_MAX_CELL_BYTES" in job["error"], job


def test_preview_cuts_long_cells_and_names_them(stack: Stack) -> None:
    name = unique("long")
    content = _parquet(pa.table({"id": [1, 2], "text": ["short", "t" * 100_000]}))
    assert upload(stack, name, content, "long.parquet").status_code == 201
    response = stack.api.get(
        f"/api/v1/datasets/{name}/preview", params={"limit": 5}, headers=stack.headers("viewer")
    )
    assert response.status_code == 200
    result = response.json()
    assert len(response.content) < 20_000
    assert result["rows"][0] == [1, "short"]
    assert len(result["rows"][1][1]) == result["truncated"]["cell_chars"]
    assert result["truncated"]["cells"] == [{"row": 1, "column": "text", "bytes": 100_000}]
    assert result["truncated"]["columns"] == ["text"]


# -- NUL characters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "content", "filename", "form"),
    [
        ("file", b"a,b\x00c\n1,2\n", "nul.csv", {}),
        ("file", _parquet(pa.table({"a": [1], "b\x00c": [2]})), "nul.parquet", {}),
        ("name", SMALL, "data.csv", {"name": "ds\x00x"}),
        ("delimiter", SMALL, "data.csv", {"delimiter": "\x00"}),
        ("format", SMALL, "data.csv", {"format": "csv\x00"}),
    ],
    ids=["csv-column", "parquet-column", "name", "delimiter", "format"],
)
def test_a_nul_in_an_upload_is_422_naming_the_field_and_leaves_nothing(
    stack: Stack, field: str, content: bytes, filename: str, form: dict[str, str]
) -> None:
    before = _rows(stack), _store_state(stack)
    form = dict(form)  # the parameters are shared by the backends
    name = form.pop("name", unique("nul"))
    response = upload(stack, name, content, filename, **form)
    assert response.status_code == 422, response.text
    loc, message = _loc_and_message(response)
    assert loc == ["body", field]
    assert "\x00" not in message  # the answer itself is storable and printable
    assert (_rows(stack), _store_state(stack)) == before


def test_a_nul_in_the_filename_does_not_matter(stack: Stack) -> None:
    """The file name only picks the format by its extension; it is not stored."""
    response = upload(stack, unique("fname"), SMALL, "da\x00ta.csv")
    assert response.status_code == 201, response.text


def test_a_failure_after_the_store_leaves_nothing_behind(stack: Stack) -> None:
    """PostgreSQL refuses a created_by over its 100 characters (SQLite stores it): the
    Parquet already in the store, and its folder, must go too."""
    if stack.backend.name == "embedded":
        pytest.skip("SQLite does not enforce VARCHAR lengths; nothing fails after the store")
    before = _rows(stack), _store_state(stack)
    source = Path(stack.backend.home) / "cleanup.csv"
    source.write_bytes(SMALL)
    with pytest.raises(Exception, match=r"(?i)too long|truncat"):
        service.create(
            stack.runtime,
            name=unique("cleanup"),
            upload=source,
            sha256="0" * 64,
            upload_bytes=len(SMALL),
            owner="o" * 101,
        )
    assert (_rows(stack), _store_state(stack)) == before


# -- deleting a dataset that a model was trained on ---------------------------------------


def test_a_dataset_a_model_was_trained_on_can_be_deleted_and_the_lineage_stays(
    stack: Stack,
) -> None:
    name = unique("lineage")
    dataset = upload(stack, name, SMALL).json()
    model_file = Path(stack.backend.home) / f"{name}.skops"
    model_file.write_bytes(b"not read by this test")
    model = unique("m")
    version = register_version(
        stack.runtime,
        name=model,
        model_file=model_file,
        fields={
            "task": "regression",
            "algorithm": "lr",
            "metric": "R2",
            "metrics": {},
            "leaderboard": [],
            "params": {},
            "feature_schema": [],
            "classes": None,
            "target": "a",
            "dataset_id": dataset["id"],
            "job_id": None,
        },
    )
    user = stack.headers("user")
    deleted = stack.api.delete(f"/api/v1/datasets/{name}@1", headers=user)
    assert deleted.status_code == 204, deleted.text
    assert f"datasets/{dataset['id']}/data.parquet" not in _store_state(stack)[0]
    gone = stack.api.get(f"/api/v1/datasets/{dataset['id']}", headers=user)
    assert gone.status_code == 404
    assert "deleted" in gone.json()["detail"] and f"{name}@1" in gone.json()["detail"]
    listed = stack.api.get("/api/v1/datasets", params={"name": name}, headers=user).json()
    assert listed["items"] == []
    shown = stack.api.get(f"/api/v1/models/{model}/versions/{version.version}", headers=user)
    assert shown.status_code == 200, shown.text
    assert shown.json()["dataset_id"] == dataset["id"]  # the lineage: which data, by id
    again = upload(stack, name, SMALL)  # the same bytes: a new version, never version 1 again
    assert again.status_code == 201, again.text
    assert again.json()["version"] == 2
    assert stack.api.delete(f"/api/v1/datasets/{name}@1", headers=user).status_code == 404
