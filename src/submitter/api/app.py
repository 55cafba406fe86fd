"""The FastAPI app factory: `submitter api` runs `create_app()` under Uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from submitter import __version__
from submitter.api.metrics import Metrics, MetricsMiddleware
from submitter.api.routes import health, jobs
from submitter.config import Settings, get_settings
from submitter.db.migrate import upgrade
from submitter.jobs.service import InvalidJob, JobConflict, JobNotFound
from submitter.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.is_embedded_db:
        upgrade(settings)
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.close()

    app = FastAPI(
        title="Submitter",
        version=__version__,
        description="Datasets, jobs, models and predictions. Authenticate with an API key.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = Metrics(runtime)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(health.router)
    app.include_router(jobs.router)
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidJob)
    async def invalid_job(request: Request, error: InvalidJob) -> JSONResponse:
        # Same shape as FastAPI's own 422s: a list whose `loc` names the field.
        return await request_validation_exception_handler(
            request, RequestValidationError(error.errors)
        )

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, error: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(JobConflict)
    async def conflict(_: Request, error: JobConflict) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)
