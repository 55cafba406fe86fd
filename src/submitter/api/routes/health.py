"""`/health` (process is up), `/ready` (DB, broker, storage answer), `/metrics` (Prometheus)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from submitter import __version__
from submitter.api.deps import RuntimeDep
from submitter.api.unavailable import RETRY_AFTER_SECONDS
from submitter.runtime import Runtime
from submitter.worker.broker import check_broker

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


#: Seconds /ready waits for all its checks together; a check still running is "timed out".
READY_TIMEOUT_SECONDS = 6.0
# Checks run side by side, so /ready takes as long as the slowest one, not their sum. A
# few threads of its own: a check stuck on a dead server (each is bounded by its client's
# timeouts: connect_timeout, socket timeouts) never takes a thread of the request pool.
_checks = ThreadPoolExecutor(max_workers=6, thread_name_prefix="ready-check")


def _database(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker(runtime: Runtime) -> None:
    check_broker(runtime.celery)


def _storage(runtime: Runtime) -> None:
    runtime.store.check()


@router.get("/ready", responses={503: {"description": "A dependency is down; it is named."}})
def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 when the database, the broker and the artifact store answer; else 503 naming the
    failing ones, within `READY_TIMEOUT_SECONDS` whatever they do."""
    started = {
        name: _checks.submit(check, runtime)
        for name, check in (("database", _database), ("broker", _broker), ("storage", _storage))
    }
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    checks: dict[str, str] = {}
    for name, future in started.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            checks[name] = "ok"
        except FutureTimeout:
            future.cancel()
            checks[name] = f"error: no answer within {READY_TIMEOUT_SECONDS:.0f} s"
        except Exception as error:
            checks[name] = f"error: {type(error).__name__}: {error}"[:300]
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        body: dict[str, Any] = {"detail": f"not ready: {', '.join(failing)} failing", **checks}
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return JSONResponse(body, status_code=503, headers=headers)
    return JSONResponse({"status": "ready", **checks})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    payload = await run_in_threadpool(generate_latest, registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
