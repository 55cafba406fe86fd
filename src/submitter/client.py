"""A small HTTP client for Submitter, for notebooks, scripts and the CLI.

from submitter import client
c = client.Client()                      # SUBMITTER_URL, SUBMITTER_API_KEY
job = c.submit("echo", {"message": "hi"})
c.wait(job["id"])["result"]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_URL = "http://127.0.0.1:7500"


class ApiError(Exception):
    """The API answered with an error status; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def default_api_key() -> str | None:
    """SUBMITTER_API_KEY, else SUBMITTER_ADMIN_KEY, else the key `submitter up` wrote."""
    for name in ("SUBMITTER_API_KEY", "SUBMITTER_ADMIN_KEY"):
        if os.environ.get(name):
            return os.environ[name]
    local = Path(os.environ.get("SUBMITTER_HOME", ".submitter")) / "admin.key"
    return local.read_text().strip() if local.is_file() else None


class Client:
    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0
    ) -> None:
        self.url = (url or os.environ.get("SUBMITTER_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or default_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    # ---- operations ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def ready(self) -> bool:
        try:
            self._request("GET", "/ready")
            return True
        except (ApiError, httpx.HTTPError):
            return False

    # ---- jobs ---------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        depends_on: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "spec": spec or {}}
        if depends_on:
            body["depends_on"] = depends_on
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        job: dict[str, Any] = self._request("POST", "/api/v1/jobs", json=body)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}")
        return job

    def jobs(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        if kind:
            params["kind"] = kind
        page: dict[str, Any] = self._request("GET", "/api/v1/jobs", params=params)
        return page

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("POST", f"/api/v1/jobs/{job_id}/cancel")
        return job

    def logs(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        page = self._request("GET", f"/api/v1/jobs/{job_id}/logs", params={"after": after})
        items: list[dict[str, Any]] = page["items"]
        return items

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        page = self._request("GET", f"/api/v1/jobs/{job_id}/artifacts")
        items: list[dict[str, Any]] = page["items"]
        return items

    def download_artifact(self, job_id: str, name: str, target: str | Path) -> Path:
        """Stream an artifact to `target` (a file, or a folder to put it in)."""
        target = Path(target)
        if target.is_dir():
            target = target / name.rsplit("/", 1)[-1]
        with self._http.stream("GET", f"/api/v1/jobs/{job_id}/artifacts/{name}") as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.json().get("detail"))
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return target

    # ---- datasets -----------------------------------------------------------------
    def upload_dataset(
        self,
        path: str | Path,
        name: str,
        *,
        file_format: str | None = None,
        delimiter: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV or Parquet file as the next version of `name` (streamed)."""
        path = Path(path)
        data = {"name": name}
        if file_format:
            data["format"] = file_format
        if delimiter:
            data["delimiter"] = delimiter
        with path.open("rb") as handle:
            dataset: dict[str, Any] = self._request(
                "POST",
                "/api/v1/datasets",
                data=data,
                files={"file": (path.name, handle)},
                timeout=None,
            )
        return dataset

    def datasets(self, *, name: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if name:
            params["name"] = name
        page: dict[str, Any] = self._request("GET", "/api/v1/datasets", params=params)
        return page

    def dataset(self, ref: str) -> dict[str, Any]:
        dataset: dict[str, Any] = self._request("GET", f"/api/v1/datasets/{ref}")
        return dataset

    def preview(self, ref: str, limit: int = 20) -> dict[str, Any]:
        rows: dict[str, Any] = self._request(
            "GET", f"/api/v1/datasets/{ref}/preview", params={"limit": limit}
        )
        return rows

    def aggregate(
        self,
        ref: str,
        fn: str,
        column: str | None = None,
        *,
        where: dict[str, Any] | None = None,
        group_by: str | None = None,
    ) -> dict[str, Any]:
        """E.g. `aggregate("credit", "mean", "AGE", where={"SEX": 1})`."""
        params: list[tuple[str, str]] = [("fn", fn)]
        if column:
            params.append(("column", column))
        params += [("where", f"{k}:{v}") for k, v in (where or {}).items()]
        if group_by:
            params.append(("group_by", group_by))
        result: dict[str, Any] = self._request(
            "GET", f"/api/v1/datasets/{ref}/aggregate", params=params
        )
        return result

    def delete_dataset(self, ref: str) -> None:
        response = self._http.delete(f"/api/v1/datasets/{ref}")
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.json().get("detail"))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; return it. Raise TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll)
