"""`/api/v1/models`: the registry (models, versions, aliases) and real-time predictions."""

from __future__ import annotations

from fastapi import APIRouter

from submitter.api.deps import RuntimeDep, User, Viewer
from submitter.jobs.schemas import Page
from submitter.registry import service
from submitter.registry.schemas import AliasIn, AliasOut, ModelOut, ModelVersionOut

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("", response_model=Page[ModelOut])
def list_models(runtime: RuntimeDep, _: Viewer) -> Page[ModelOut]:
    items = [ModelOut.model_validate(m) for m in service.list_models(runtime)]
    return Page(items=items, total=len(items))


@router.get("/{name}", response_model=ModelOut)
def get_model(name: str, runtime: RuntimeDep, _: Viewer) -> ModelOut:
    return ModelOut.model_validate(service.get_model(runtime, name))


@router.get("/{name}/versions", response_model=Page[ModelVersionOut])
def list_versions(name: str, runtime: RuntimeDep, _: Viewer) -> Page[ModelVersionOut]:
    items = [ModelVersionOut.model_validate(v) for v in service.list_versions(runtime, name)]
    return Page(items=items, total=len(items))


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut)
def get_version(name: str, version: int, runtime: RuntimeDep, _: Viewer) -> ModelVersionOut:
    return ModelVersionOut.model_validate(service.get_version(runtime, name, version))


@router.put("/{name}/aliases/{alias}", response_model=AliasOut)
def set_alias(name: str, alias: str, body: AliasIn, runtime: RuntimeDep, _: User) -> AliasOut:
    """Point an alias (e.g. `production`) at a version; predictions follow at once."""
    return AliasOut.model_validate(service.set_alias(runtime, name, alias, body.version))
