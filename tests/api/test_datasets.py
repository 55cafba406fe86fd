"""Datasets through the API on each backend's store (local folder; S3 on postgres-redis)."""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from submitter.db.models import Dataset
from tests.conftest import Stack

CREDIT = Path(__file__).resolve().parents[1] / "data" / "credit.csv"
SMALL = b"a,b,c\n1,x,0.5\n2,y,1.5\n3,z,\n"


def upload(
    stack: Stack,
    name: str,
    content: bytes,
    filename: str = "data.csv",
    role: str = "user",
    **fields: str,
) -> Any:
    return stack.api.post(
        "/api/v1/datasets",
        data={"name": name, **fields},
        files={"file": (filename, content)},
        headers=stack.headers(role),
    )


def _count(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def _stored_keys(stack: Stack) -> set[str]:
    return {item.key for item in stack.runtime.store.list("datasets")}


def unique(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_credit_upload_and_the_mean_age_of_men(stack: Stack) -> None:
    content = CREDIT.read_bytes()
    name = unique("credit")
    response = upload(stack, name, content, "credit.csv")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["version"] == 1
    assert dataset["row_count"] == 24_000
    assert dataset["sha256"] == hashlib.sha256(content).hexdigest()
    assert dataset["upload_bytes"] == len(content)
    assert {"name": "AGE", "dtype": "int64"} in dataset["columns"]
    result = stack.api.get(
        f"/api/v1/datasets/{name}/aggregate",
        params={"fn": "mean", "column": "AGE", "where": "SEX:1"},
        headers=stack.headers("viewer"),
    ).json()
    assert round(result["value"], 3) == 36.589
    assert result["rows"] == 9_578


def test_versions_dedupe_and_references(stack: Stack) -> None:
    name = unique("ds")
    first = upload(stack, name, SMALL)
    assert first.status_code == 201, first.text
    again = upload(stack, name, SMALL, filename="other-name.csv")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    second = upload(stack, name, SMALL + b"4,w,2.5\n")
    assert second.status_code == 201
    assert second.json()["version"] == 2
    viewer = stack.headers("viewer")
    assert stack.api.get(f"/api/v1/datasets/{name}", headers=viewer).json()["version"] == 2
    assert stack.api.get(f"/api/v1/datasets/{name}@1", headers=viewer).json()["version"] == 1
    by_id = stack.api.get(f"/api/v1/datasets/{first.json()['id']}", headers=viewer).json()
    assert by_id["version"] == 1
    listed = stack.api.get("/api/v1/datasets", params={"name": name}, headers=viewer).json()
    assert [d["version"] for d in listed["items"]] == [2, 1]
    for missing in (f"{name}@3", f"{name}@x", "nope-" + name, "0" * 32):
        assert stack.api.get(f"/api/v1/datasets/{missing}", headers=viewer).status_code == 404


def test_parquet_upload_preview_and_aggregate(stack: Stack) -> None:
    table = pa.table({"city": ["Oulu", "Turku", "Oulu", None], "t": [1.5, 2.5, 3.5, 4.0]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    name = unique("weather")
    response = upload(stack, name, buffer.getvalue(), "weather.parquet")
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "parquet"
    viewer = stack.headers("viewer")
    preview = stack.api.get(
        f"/api/v1/datasets/{name}/preview", params={"limit": 2}, headers=viewer
    ).json()
    assert preview["columns"] == ["city", "t"]
    assert preview["rows"] == [["Oulu", 1.5], ["Turku", 2.5]]
    grouped = stack.api.get(
        f"/api/v1/datasets/{name}/aggregate",
        params={"fn": "sum", "column": "t", "group_by": "city"},
        headers=viewer,
    ).json()
    assert [(g["key"], g["value"]) for g in grouped["groups"]] == [
        ("Oulu", 5.0),
        ("Turku", 2.5),
        (None, 4.0),
    ]
    bad = stack.api.get(
        f"/api/v1/datasets/{name}/aggregate",
        params={"fn": "mean", "column": "nope"},
        headers=viewer,
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][0] == "query"
    too_many = stack.api.get(
        f"/api/v1/datasets/{name}/preview", params={"limit": 1001}, headers=viewer
    )
    assert too_many.status_code == 422


@pytest.mark.parametrize(
    ("content", "filename", "reason"),
    [
        (b"", "empty.csv", "empty"),
        (b"1,2,3\n4,5,6\n", "noheader.csv", "header"),
        (b"a,b\n1,2\n3,4,5\n6,7\n", "ragged.csv", "line 3"),
        (b"a,b\n1,caf\xe9\n", "latin1.csv", "UTF-8"),
        (b"a,b,a\n1,2,3\n", "dup.csv", "duplicate"),
        (b"\x00\x01\x02garbage", "data.xlsx", "format"),
        (b"PAR1 this is not really parquet PAR1", "broken.parquet", "parquet"),
    ],
)
def test_bad_uploads_are_refused_with_the_reason_and_store_nothing(
    stack: Stack, content: bytes, filename: str, reason: str
) -> None:
    before, keys = _count(stack), _stored_keys(stack)
    response = upload(stack, unique("bad"), content, filename)
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    message = detail[0]["msg"] if isinstance(detail, list) else detail
    assert reason.lower() in message.lower(), message
    assert _count(stack) == before
    assert _stored_keys(stack) == keys


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "/etc/passwd", "..", ".", "", "x" * 101, "a\nb", "name@2"]
)
def test_hostile_dataset_names_are_refused(stack: Stack, name: str) -> None:
    before = _count(stack)
    response = upload(stack, name, SMALL)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert _count(stack) == before


def test_hostile_upload_filename_does_not_reach_the_store(stack: Stack) -> None:
    name = unique("fname")
    response = upload(stack, name, SMALL, filename="../../../../tmp/evil.csv")
    assert response.status_code == 201
    key = f"datasets/{response.json()['id']}/data.parquet"
    assert key in _stored_keys(stack)


def test_upload_needs_file_and_name_and_the_user_role(stack: Stack) -> None:
    missing_file = stack.api.post(
        "/api/v1/datasets", data={"name": "x"}, headers=stack.headers("user")
    )
    assert missing_file.status_code == 422
    missing_name = stack.api.post(
        "/api/v1/datasets", files={"file": ("a.csv", SMALL)}, headers=stack.headers("user")
    )
    assert missing_name.status_code == 422
    assert missing_name.json()["detail"][0]["loc"] == ["body", "name"]
    assert upload(stack, unique("v"), SMALL, role="viewer").status_code == 403


def test_oversized_upload_is_413_and_cut_off(tmp_path: Path) -> None:
    """Against a real server: the upload stops near the limit instead of being read whole."""
    from tests.cli.test_cli import _free_port, _wait_ready
    from tests.conftest import Process, make_backend

    with make_backend("embedded", tmp_path) as backend:
        port = _free_port()
        backend.env.update(SUBMITTER_API_PORT=str(port), SUBMITTER_MAX_UPLOAD_BYTES="100000")
        api = Process(backend, "api")
        try:
            _wait_ready(f"http://127.0.0.1:{port}")
            head = (
                b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.csv"'
                b"\r\n\r\na,b\n"
            )
            total, sent = 200_000_000, 0
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(
                    b"POST /api/v1/datasets HTTP/1.1\r\nHost: x\r\n"
                    + f"Authorization: Bearer {backend.admin_key}\r\n".encode()
                    + b"Content-Type: multipart/form-data; boundary=b\r\n"
                    + b"Transfer-Encoding: chunked\r\n\r\n"
                )
                chunk = b"1,2\n" * 16_384
                framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
                try:
                    sock.sendall(b"%x\r\n" % len(head) + head + b"\r\n")
                    while sent < total:
                        sock.sendall(framed)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                reply = sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
            assert b"SUBMITTER_MAX_UPLOAD_BYTES" in reply
            assert sent < 50_000_000  # cut off near the limit, not read to the end
        finally:
            api.stop()


def test_describe_job_reads_a_dataset_and_keeps_an_artifact(stack: Stack) -> None:
    name = unique("describe")
    dataset = upload(stack, name, SMALL).json()
    job = stack.submit("describe", spec={"dataset": f"{name}@1"})
    assert job["spec"]["dataset"] == dataset["id"]  # resolved at submit
    done = stack.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"] == {"dataset": dataset["id"], "rows": 3, "columns": 3}
    viewer = stack.headers("viewer")
    listed = stack.api.get(f"/api/v1/jobs/{job['id']}/artifacts", headers=viewer).json()
    assert [a["name"] for a in listed["items"]] == ["summary.json"]
    artifact = listed["items"][0]
    content = stack.api.get(f"/api/v1/jobs/{job['id']}/artifacts/summary.json", headers=viewer)
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == artifact["sha256"]
    assert len(content.content) == artifact["size"]
    assert content.json()["columns"]["a"]["mean"] == 2.0
    for hostile in ("../summary.json", "..%2F..%2Fetc%2Fpasswd", "nope.json", "%2Fetc%2Fpasswd"):
        response = stack.api.get(f"/api/v1/jobs/{job['id']}/artifacts/{hostile}", headers=viewer)
        assert response.status_code == 404, hostile


def test_unknown_dataset_in_a_job_spec_is_422(stack: Stack) -> None:
    response = stack.api.post(
        "/api/v1/jobs",
        json={"kind": "describe", "spec": {"dataset": "no-such-dataset"}},
        headers=stack.headers("user"),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "spec", "dataset"]


def test_dataset_used_by_an_active_job_cannot_be_deleted(stack: Stack) -> None:
    name = unique("inuse")
    upload(stack, name, SMALL)
    blocker = stack.submit(spec={"message": "hold", "sleep_seconds": 30})
    waiting = stack.submit("describe", spec={"dataset": name}, depends_on=[blocker["id"]])
    user = stack.headers("user")
    refused = stack.api.delete(f"/api/v1/datasets/{name}", headers=user)
    assert refused.status_code == 409
    assert waiting["id"] in refused.json()["detail"]
    stack.api.post(f"/api/v1/jobs/{blocker['id']}/cancel", headers=user)
    stack.wait(waiting["id"])
    deleted = stack.api.delete(f"/api/v1/datasets/{name}", headers=user)
    assert deleted.status_code == 204
    assert stack.api.get(f"/api/v1/datasets/{name}", headers=user).status_code == 404
