"""`/api/v1/models`: the registry (models, versions, aliases) and real-time predictions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from submitter.api.deps import RuntimeDep, User, Viewer
from submitter.api.errors import API_ERRORS, responses
from submitter.api.params import VersionPath
from submitter.db.types import INT32_MAX
from submitter.jobs.schemas import Page
from submitter.registry import predictors, service
from submitter.registry.predictors import PredictIn
from submitter.registry.schemas import AliasIn, AliasOut, ModelOut, ModelVersionOut

if TYPE_CHECKING:
    from submitter.db.models import ModelVersion
    from submitter.runtime import Runtime

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=API_ERRORS)


@router.get("", response_model=Page[ModelOut])
def list_models(runtime: RuntimeDep, _: Viewer) -> Page[ModelOut]:
    items = [ModelOut.model_validate(m) for m in service.list_models(runtime)]
    return Page(items=items, total=len(items))


@router.get("/{name}", response_model=ModelOut, responses=responses(404))
def get_model(name: str, runtime: RuntimeDep, _: Viewer) -> ModelOut:
    return ModelOut.model_validate(service.get_model(runtime, name))


@router.get("/{name}/versions", response_model=Page[ModelVersionOut], responses=responses(404))
def list_versions(name: str, runtime: RuntimeDep, _: Viewer) -> Page[ModelVersionOut]:
    items = _versions_out(runtime, service.list_versions(runtime, name))
    return Page(items=items, total=len(items))


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut, responses=responses(404))
def get_version(name: str, version: VersionPath, runtime: RuntimeDep, _: Viewer) -> ModelVersionOut:
    return _versions_out(runtime, [service.get_version(runtime, name, version)])[0]


def _versions_out(runtime: Runtime, versions: list[ModelVersion]) -> list[ModelVersionOut]:
    """Versions with their plots, found in one query for the whole list."""
    plots = service.version_plots(runtime, versions)
    return [
        ModelVersionOut.model_validate(v).model_copy(update={"plots": plots.get(v.id, [])})
        for v in versions
    ]


@router.put("/{name}/aliases/{alias}", response_model=AliasOut, responses=responses(404))
def set_alias(name: str, alias: str, body: AliasIn, runtime: RuntimeDep, _: User) -> AliasOut:
    """Point an alias (e.g. `production`) at a version; predictions follow at once."""
    return AliasOut.model_validate(service.set_alias(runtime, name, alias, body.version))


@router.post("/{name}/predict", responses=responses(404), response_class=JSONResponse)
async def predict(
    name: str,
    body: PredictIn,
    request: Request,
    runtime: RuntimeDep,
    _: Viewer,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    alias: str | None = None,
) -> Response:
    """Predict up to 10,000 rows with `?version=`, `?alias=`, else `production`, else latest.

    Classifiers also return class probabilities, in the order of `classes`.
    """
    from submitter.ml.features import SchemaError

    if version is not None and alias is not None:
        raise RequestValidationError(
            [
                {
                    "loc": ["query", "alias"],
                    "msg": "give version or alias, not both",
                    "type": "value_error",
                }
            ]
        )
    started = time.perf_counter()
    try:
        result = await predictors.predict_async(
            runtime, request.app.state.predictors, name, body, version=version, alias=alias
        )
    except SchemaError as error:
        raise RequestValidationError(
            [{"loc": ["body", *str(error.field).split(".")], "msg": error.reason, "type": "schema"}]
        ) from None
    # Successful predictions only: an unknown model is a 404 and must not become a series.
    request.app.state.metrics.observe_prediction(name, time.perf_counter() - started)
    return Response(orjson.dumps(result), media_type="application/json")
