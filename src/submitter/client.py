"""A small HTTP client for Submitter, for notebooks, scripts and the CLI.

from submitter import Client
c = Client()                             # SUBMITTER_URL, SUBMITTER_API_KEY
job = c.submit("echo", {"message": "hi"})
c.wait(job["id"])["result"]              # follows the job's event stream
for event in c.events(job["id"]): ...    # state, log, end: live, as they happen

Every failure is a `SubmitterError`: `ApiError` when the API answered with an error
status, `ApiUnreachable` when no answer came (not running, wrong URL, timeout). httpx is
imported when the first client is made, so that `submitter --help` starts fast.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_URL = "http://127.0.0.1:7500"
#: Longest wait (s) for the next bytes of an event stream: the server sends a `: ping`
#: every 15 s when it has nothing else, so this long a silence is a dead connection.
EVENTS_READ_TIMEOUT = 60.0
#: Reconnects in a row that may fail (no event in between) before `events()` gives up.
EVENTS_RETRIES = 5


class SubmitterError(Exception):
    """Anything that went wrong talking to Submitter."""


class ApiError(SubmitterError):
    """The API answered with an error status; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ApiUnreachable(SubmitterError):
    """No answer from the API: it is not running, the URL is wrong, or it timed out."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the Submitter API at {url}: {reason}. Start it with "
            "`submitter up`, or point SUBMITTER_URL at a running one."
        )
        self.url = url
        self.reason = reason


class EventsUnavailable(ApiError):
    """The API has no event stream (one older than it): follow the job by polling."""


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
        import httpx

        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _answered(self) -> Iterator[None]:
        """Turn httpx's transport errors into `ApiUnreachable` naming the URL."""
        import httpx

        try:
            yield
        except httpx.TimeoutException:
            raise ApiUnreachable(self.url, "no answer in time") from None
        except httpx.TransportError as error:
            raise ApiUnreachable(self.url, str(error) or type(error).__name__) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._answered():
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        try:
            return None if response.status_code == 204 else response.json()
        except ValueError:
            raise ApiUnreachable(self.url, "the answer is not Submitter's JSON") from None

    # ---- operations ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def ready(self) -> bool:
        try:
            self._request("GET", "/ready")
            return True
        except SubmitterError:
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

    def submit_many(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit up to 1,000 jobs in one request, all or none (`POST /api/v1/jobs/batch`).

        Each request is a dict as `submit` sends it (`kind`, `spec`, `depends_on`,
        `idempotency_key`); in `depends_on`, `"#i"` names the request at index i (an earlier
        one). Returns the jobs in order; a 422 (ApiError) names bad ones by index.
        """
        answer: dict[str, Any] = self._request(
            "POST", "/api/v1/jobs/batch", json={"jobs": requests}
        )
        jobs: list[dict[str, Any]] = answer["items"]
        return jobs

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}")
        return job

    def jobs(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        schedule: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        if kind:
            params["kind"] = kind
        if schedule:
            params["schedule"] = schedule
        page: dict[str, Any] = self._request("GET", "/api/v1/jobs", params=params)
        return page

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("POST", f"/api/v1/jobs/{job_id}/cancel")
        return job

    def sweep(self, job_id: str, best_by: str | None = None) -> dict[str, Any]:
        """A sweep's children side by side (`GET /api/v1/jobs/{id}/sweep`): parameters,
        state, result values and last metric values per child, sorted by `best_by` (a
        result value or else a metric; `-name`: lowest first)."""
        params = {"best_by": best_by} if best_by else None
        table: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}/sweep", params=params)
        return table

    def logs(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        page = self._request("GET", f"/api/v1/jobs/{job_id}/logs", params={"after": after})
        items: list[dict[str, Any]] = page["items"]
        return items

    def metrics(self, job_id: str, name: str | None = None) -> list[dict[str, Any]]:
        """Every value the job reported (`$SUBMITTER_METRICS`), by name then step."""
        items: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"offset": len(items), "limit": 10_000}
            if name is not None:
                params["name"] = name
            page = self._request("GET", f"/api/v1/jobs/{job_id}/metrics", params=params)
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
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
        url = f"/api/v1/jobs/{job_id}/artifacts/{name}"
        with self._answered(), self._http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                raise _api_error(response)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return target

    # ---- datasets -----------------------------------------------------------------
    def upload_dataset(
        self,
        path: str | Path | Any,
        name: str,
        *,
        file_format: str | None = None,
        delimiter: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV or Parquet file, or a pandas DataFrame, as the next version of `name`."""
        if not isinstance(path, str | Path):  # a DataFrame: send it as Parquet
            import tempfile

            with tempfile.TemporaryDirectory(prefix="submitter-upload-") as tmp:
                target = Path(tmp) / f"{name}.parquet"
                path.to_parquet(target, index=False)
                return self.upload_dataset(target, name)
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
        self._request("DELETE", f"/api/v1/datasets/{ref}")

    # ---- training, registry, predictions ------------------------------------------
    def train(self, dataset: str, target: str, model_name: str, **spec: Any) -> JobHandle:
        """Start a training job (spec keys: task, models, folds, metric, holdout, ...)."""
        job = self.submit(
            "train", {"dataset": dataset, "target": target, "model_name": model_name, **spec}
        )
        return JobHandle(self, job["id"])

    # ---- schedules -------------------------------------------------------------------
    def create_schedule(
        self,
        name: str,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        enabled: bool = True,
        allow_overlap: bool = False,
    ) -> dict[str, Any]:
        """Submit `kind` with `spec` on a `cron` expression or `every` N seconds."""
        body: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "spec": spec or {},
            "cron": cron,
            "interval_seconds": every,
            "enabled": enabled,
            "allow_overlap": allow_overlap,
        }
        if timezone:
            body["timezone"] = timezone
        schedule: dict[str, Any] = self._request("POST", "/api/v1/schedules", json=body)
        return schedule

    def schedules(self, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        page: dict[str, Any] = self._request(
            "GET", "/api/v1/schedules", params={"limit": limit, "offset": offset}
        )
        return page

    def schedule(self, ref: str) -> dict[str, Any]:
        schedule: dict[str, Any] = self._request("GET", f"/api/v1/schedules/{ref}")
        return schedule

    def update_schedule(self, ref: str, **changes: Any) -> dict[str, Any]:
        """Change fields, e.g. `enabled=False` to pause, `cron="0 4 * * *"`."""
        schedule: dict[str, Any] = self._request("PATCH", f"/api/v1/schedules/{ref}", json=changes)
        return schedule

    def run_schedule(self, ref: str) -> dict[str, Any]:
        """Submit the schedule's job now; returns the job."""
        job: dict[str, Any] = self._request("POST", f"/api/v1/schedules/{ref}/run")
        return job

    def delete_schedule(self, ref: str) -> None:
        self._request("DELETE", f"/api/v1/schedules/{ref}")

    def workers(self) -> list[dict[str, Any]]:
        """Worker processes: state (online, offline, stopped), queues, running jobs."""
        items: list[dict[str, Any]] = self._request("GET", "/api/v1/workers")["items"]
        return items

    def tasks(self) -> list[dict[str, Any]]:
        """Beat's built-in tasks: state (ok, failing, late, never), last run, errors."""
        items: list[dict[str, Any]] = self._request("GET", "/api/v1/tasks")["items"]
        return items

    def service_logs(
        self,
        service: str = "all",
        *,
        host: str | None = None,
        level: str | None = None,
        job_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_id: int | None = None,
        order: str = "newest",
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Recent log records of the api, worker, beat or flower processes (or `all`), as
        `{"items": [...], "total": N}`; admin only. `level` is the least level; `order`
        `newest` (by id) or `oldest` (with `after_id`, to follow)."""
        params: dict[str, Any] = {"order": order, "limit": limit, "offset": offset}
        filters: dict[str, Any] = {"host": host, "level": level, "job_id": job_id}
        filters.update(since=since, until=until, after_id=after_id)
        params.update({name: value for name, value in filters.items() if value is not None})
        page: dict[str, Any] = self._request("GET", f"/api/v1/logs/{service}", params=params)
        return page

    # ---- clusters ---------------------------------------------------------------------
    def clusters(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._request("GET", "/api/v1/clusters")["items"]
        return items

    def check_cluster(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/v1/clusters/{name}/check")
        return result

    def models(self) -> list[dict[str, Any]]:
        page = self._request("GET", "/api/v1/models")
        items: list[dict[str, Any]] = page["items"]
        return items

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        page = self._request("GET", f"/api/v1/models/{name}/versions")
        items: list[dict[str, Any]] = page["items"]
        return items

    def download_plots(
        self, name: str, target: str | Path, *, version: int | None = None
    ) -> list[Path]:
        """Download the plots of a model version (default: the latest) into the folder
        `target`, created if missing, as `roc.png`, `importance.png`, ...; return the paths.

        Empty when the version has none: trained before plots were made, or its training
        job has not finished yet (the version is registered before the plots are drawn).
        """
        if version is None:
            versions = self.model_versions(name)
            if not versions:
                raise ApiError(404, f"model {name!r} has no versions")
            chosen = versions[0]  # newest first
        else:
            chosen = self._request("GET", f"/api/v1/models/{name}/versions/{version}")
        folder = Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            self.download_artifact(chosen["job_id"], plot, folder / plot.rsplit("/", 1)[-1])
            for plot in chosen.get("plots") or []
        ]

    def promote(self, name: str, version: int, alias: str = "production") -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}
        )
        return result

    def predict(
        self,
        name: str,
        rows: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> Any:
        """Predict rows (a DataFrame, or a list of dicts). A DataFrame in, a DataFrame out."""
        params: dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        if alias is not None:
            params["alias"] = alias
        frame = None
        if hasattr(rows, "to_dict"):
            frame = rows
            body = {"columns": [str(c) for c in rows.columns], "data": _jsonable(rows)}
        else:
            body = {"rows": rows}
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/models/{name}/predict", json=body, params=params
        )
        if frame is None:
            return result
        import pandas as pd

        out = pd.DataFrame({"prediction": result["predictions"]}, index=frame.index)
        for index, label in enumerate(result.get("classes") or []):
            out[f"probability_{label}"] = [p[index] for p in result["probabilities"]]
        return out

    def events(
        self,
        job_id: str,
        *,
        after_log: int = 0,
        timeout: float | None = None,
        retries: int = EVENTS_RETRIES,
    ) -> Generator[dict[str, Any], None, None]:
        """Follow a job's event stream (`GET /api/v1/jobs/{id}/events`) until it ends.

        Yields `{"event", "id", "data"}` for each `state` (data: the job), `log` (data: a
        log line, as `logs()` items) and `end` (data: the finished job; always the last
        one); `id` is the log cursor. `after_log` skips the lines up to that id.

        The stream is resumed, not restarted: after a dropped connection, a `reconnect`
        (a stream's life is bounded) or an `error` event (the database went away), it
        connects again with `Last-Event-ID`, so no log line comes twice or goes missing.
        After `retries` failed reconnects in a row it raises what went wrong
        (ApiUnreachable, or ApiError 503). The first connect is not retried: an API that
        is not running is an ApiUnreachable at once, as for every call. Raises
        TimeoutError after `timeout` seconds, EventsUnavailable for an API that has no
        event stream."""
        import httpx

        follow = _Follow(cursor=after_log, deadline=_deadline(timeout))
        while True:
            try:
                ended = yield from self._follow_once(job_id, follow)
            except httpx.TimeoutException:
                if follow.expired():
                    raise TimeoutError(
                        f"job {job_id} still {follow.state} after {timeout}s"
                    ) from None
                problem: SubmitterError = ApiUnreachable(self.url, "no answer in time")
            except httpx.TransportError as error:
                problem = ApiUnreachable(self.url, str(error) or type(error).__name__)
            except _Resume as resume:
                problem = resume.error
            else:
                if ended:
                    return
                continue  # a planned `reconnect`: at once, and not a failure
            follow.failures += 1
            if not follow.connected or follow.failures > retries:
                raise problem
            self._pause(follow, job_id, timeout)

    def _follow_once(self, job_id: str, follow: _Follow) -> Generator[dict[str, Any], None, bool]:
        """One connection of `events()`: yield its events; return True after `end`, False
        after `reconnect`; raise _Resume for a retryable failure, httpx errors as they
        come."""
        import httpx

        headers = {"Accept": "text/event-stream"}
        if follow.cursor:
            headers["Last-Event-ID"] = str(follow.cursor)
        read = EVENTS_READ_TIMEOUT if follow.deadline is None else follow.remaining()
        timeout = httpx.Timeout(self.timeout, read=max(0.05, min(EVENTS_READ_TIMEOUT, read)))
        url = f"/api/v1/jobs/{job_id}/events"
        with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                error = _api_error(response)
                if response.status_code == 404 and error.detail == "Not Found":  # no route
                    raise EventsUnavailable(404, "the API has no event stream")
                if response.status_code != 503:
                    raise error
                follow.delay = _seconds(response.headers.get("Retry-After"), follow.delay)
                raise _Resume(error)
            follow.connected = True
            first = True
            for event in parse_sse(response.iter_lines()):
                if event["retry"] is not None:
                    follow.delay = event["retry"] / 1000
                if event["id"] is not None and event["id"].isdigit():
                    follow.cursor = int(event["id"])
                name = event["event"]
                try:
                    data = json.loads(event["data"])
                except ValueError:
                    raise ApiUnreachable(self.url, "the answer is not Submitter's events") from None
                if name in ("state", "log", "end"):
                    if not first:  # news since the connect: the stream works again
                        follow.failures = 0
                    first = False
                    if name != "log" and isinstance(data, dict):
                        follow.state = str(data.get("state", follow.state))
                    yield {"event": name, "id": follow.cursor, "data": data}
                    if name == "end":
                        return True
                elif name == "reconnect":
                    return False
                elif name == "error":
                    detail = data.get("detail") if isinstance(data, dict) else data
                    raise _Resume(ApiError(503, detail))
                if follow.expired():
                    raise httpx.ReadTimeout("deadline")
        # The server closed the stream without `end`: a dropped connection.
        raise _Resume(ApiUnreachable(self.url, "the event stream closed before the job ended"))

    @staticmethod
    def _pause(follow: _Follow, job_id: str, timeout: float | None) -> None:
        """Sleep before a reconnect: the server's `retry` (or Retry-After), doubled on each
        failure in a row, at most 30 s, never past the deadline."""
        delay = min(30.0, follow.delay * 2 ** (follow.failures - 1))
        if follow.remaining() <= delay:
            time.sleep(max(0.0, follow.remaining()))
            raise TimeoutError(f"job {job_id} still {follow.state} after {timeout}s")
        time.sleep(delay)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the job ends; return it. Raise TimeoutError after `timeout` seconds.

        Follows the job's event stream: `on_update(job)` is called with the job at the
        start and on each change, `on_log(line)` with each log line (all of them, in
        order). An API without the stream is polled every `poll` seconds instead."""
        try:
            with closing(self.events(job_id, timeout=timeout)) as events:
                for event in events:
                    if event["event"] == "log":
                        if on_log is not None:
                            on_log(event["data"])
                    elif on_update is not None:
                        on_update(event["data"])
                    if event["event"] == "end":
                        job: dict[str, Any] = event["data"]
                        return job
        except EventsUnavailable:
            pass
        return self._poll_until_done(job_id, timeout, poll, on_update, on_log)

    def _poll_until_done(
        self,
        job_id: str,
        timeout: float | None,
        poll: float,
        on_update: Callable[[dict[str, Any]], None] | None,
        on_log: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        """`wait()` by polling, for an API without the event stream."""
        deadline = _deadline(timeout)
        after = 0
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if on_log is not None:  # read after the job: an ended job's lines are all there
                for line in self.logs(job_id, after=after):
                    after = line["id"]
                    on_log(line)
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll)


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The events of a `text/event-stream` body given as lines (without their line ends),
    by the WHATWG rules: `{"event", "data", "id", "retry"}`, where `event` defaults to
    `message`, `data` joins the event's data lines with newlines, `id` is the last event
    id so far (it carries over to later events) and `retry` is this event's, or None.
    Comments (`: ping`) and events without data are skipped."""
    name, last_id, retry = "", None, None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield {
                    "event": name or "message",
                    "data": "\n".join(data),
                    "id": last_id,
                    "retry": retry,
                }
            name, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value
        elif field == "retry" and value.isdigit():
            retry = int(value)


@dataclass
class _Follow:
    """Where `Client.events()` is: log cursor, last state, reconnect delay and failures."""

    cursor: int
    deadline: float | None
    state: str = "queued"
    delay: float = 1.0
    failures: int = 0
    connected: bool = False

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


class _Resume(Exception):
    """A stream ended by something a reconnect may cure; `error` is raised if none does."""

    def __init__(self, error: SubmitterError) -> None:
        super().__init__(str(error))
        self.error = error


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


def _api_error(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text[:500] or response.reason_phrase
    return ApiError(response.status_code, detail)


def _jsonable(frame: Any) -> list[list[Any]]:
    """DataFrame rows as JSON values: NaN becomes null, numpy scalars Python numbers."""
    import json

    return json.loads(frame.to_json(orient="values", date_format="iso"))  # type: ignore[no-any-return]


class JobHandle:
    """A submitted job, for notebooks: `handle.wait(progress=True)` shows a progress bar."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def get(self) -> dict[str, Any]:
        return self.client.job(self.id)

    def logs(self) -> list[str]:
        return [line["message"] for line in self.client.logs(self.id)]

    def cancel(self) -> dict[str, Any]:
        return self.client.cancel(self.id)

    def metrics(self, name: str | None = None) -> Any:
        """The job's metrics as a pandas DataFrame: columns name, step, value, at (one row
        per value; `df.pivot(index="step", columns="name", values="value")` for a wide one)."""
        import pandas as pd

        rows = self.client.metrics(self.id, name)
        frame = pd.DataFrame(rows, columns=["name", "step", "value", "at"])
        frame["at"] = pd.to_datetime(frame["at"], utc=True, format="ISO8601")
        return frame

    def wait(
        self, *, timeout: float | None = None, progress: bool = False, logs: bool = False
    ) -> dict[str, Any]:
        """Wait until the job ends and return it; raise if it did not succeed.

        `progress`: a live progress bar; `logs`: print the job's log lines as they come.
        Both follow the job's event stream (updates as they happen, not polled)."""
        if not progress:
            on_log = (lambda line: print(line["message"])) if logs else None
            job = self.client.wait(self.id, timeout=timeout, on_log=on_log)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.text import Text

            with Progress(
                TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()
            ) as bar:
                task = bar.add_task("queued", total=1.0)

                def update(job: dict[str, Any]) -> None:
                    label = job["state"] + (f" · {job['message']}" if job.get("message") else "")
                    bar.update(task, completed=job.get("progress") or 0.0, description=label[:70])

                def show(line: dict[str, Any]) -> None:  # above the bar; not rich markup
                    bar.console.print(Text(line["message"]), highlight=False)

                job = self.client.wait(
                    self.id, timeout=timeout, on_update=update, on_log=show if logs else None
                )
        if job["state"] != "succeeded":
            raise JobFailed(job)
        return job


class JobFailed(Exception):
    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(
            f"job {job['id']} {job['state']}: {job.get('error') or job.get('message')}"
        )
        self.job = job
