"""The FastAPI app factory: `submitter api` runs `create_app()` under Uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from submitter import __version__
from submitter.api import docs, errors, inputs, unavailable
from submitter.api.metrics import Metrics, MetricsMiddleware
from submitter.api.routes import (
    clusters,
    datasets,
    health,
    job_metrics,
    jobs,
    logs,
    models,
    schedules,
    tasks,
    workers,
)
from submitter.api.uploads import BadUpload, UploadTooLarge
from submitter.config import Settings, get_settings
from submitter.datasets.errors import QueryError
from submitter.datasets.service import DatasetInUse, DatasetNotFound, InvalidDataset
from submitter.db.migrate import upgrade
from submitter.hpc.clusters import UnknownCluster
from submitter.jobs.artifacts import ArtifactNotFound
from submitter.jobs.service import InvalidJob, JobConflict, JobNotFound
from submitter.registry.predictors import PredictorCache
from submitter.registry.service import InvalidModelRequest, ModelNotFound
from submitter.runtime import Runtime
from submitter.schedules.service import ScheduleConflict, ScheduleNotFound
from submitter.ui import UPLOAD_PATH
from submitter.ui import install as install_console


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
        dependencies=[Depends(inputs.check_inputs)],
        docs_url=None,  # docs.install serves /docs and /redoc from the package, not a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = Metrics(runtime)
    app.state.predictors = PredictorCache(runtime, settings.model_cache_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    # The upload streams to disk and bounds itself by SUBMITTER_MAX_UPLOAD_BYTES.
    app.add_middleware(
        inputs.BodyLimit,
        limit=settings.max_request_bytes,
        exempt={("POST", "/api/v1/datasets"), ("POST", UPLOAD_PATH)},
    )
    app.include_router(health.router)
    docs.install(app)
    app.include_router(jobs.router)
    app.include_router(job_metrics.router)
    app.include_router(datasets.router)
    app.include_router(models.router)
    app.include_router(clusters.router)
    app.include_router(schedules.router)
    app.include_router(workers.router)
    app.include_router(tasks.router)
    app.include_router(logs.router)
    _add_error_handlers(app)
    unavailable.install(app)  # database or store away: 503 + Retry-After, not 500
    install_console(app)  # the web console at /ui; last: it wraps the error handlers
    return app


def _add_error_handlers(app: FastAPI) -> None:
    errors.install(
        app,
        statuses={
            JobNotFound: 404,
            ArtifactNotFound: 404,
            DatasetNotFound: 404,
            ScheduleNotFound: 404,
            ModelNotFound: 404,
            UnknownCluster: 404,
            JobConflict: 409,
            ScheduleConflict: 409,
            DatasetInUse: 409,
            clusters.ClusterCheckFailed: 502,
        },
        field_errors={
            BadUpload: "body",
            InvalidDataset: "body",
            QueryError: "query",
            InvalidModelRequest: "path",
        },
    )

    @app.exception_handler(InvalidJob)
    async def invalid_job(_: Request, error: InvalidJob) -> JSONResponse:
        # Same shape as FastAPI's own 422s: a list whose `loc` names the field.
        return errors.unprocessable(error.errors)

    @app.exception_handler(UploadTooLarge)
    async def too_large(_: Request, error: UploadTooLarge) -> JSONResponse:
        # Close the connection: otherwise the server goes on reading (and discarding)
        # the rest of the body to keep the connection alive.
        return JSONResponse(
            {"detail": str(error)}, status_code=413, headers={"Connection": "close"}
        )
