"""`/health` (process is up), `/ready` (DB, broker, storage answer), `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from submitter import __version__
from submitter.api.deps import RuntimeDep
from submitter.worker.broker import check_broker

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", responses={503: {"description": "A dependency is down; it is named."}})
def ready(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"error: {type(error).__name__}: {error}"[:300]
    try:
        check_broker(runtime.celery)
        checks["broker"] = "ok"
    except Exception as error:
        checks["broker"] = f"error: {type(error).__name__}: {error}"[:300]
    try:
        runtime.store.check()
        checks["storage"] = "ok"
    except Exception as error:
        checks["storage"] = f"error: {type(error).__name__}: {error}"[:300]
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        body: dict[str, Any] = {"detail": f"not ready: {', '.join(failing)} failing", **checks}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", **checks})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    payload = await run_in_threadpool(generate_latest, registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
