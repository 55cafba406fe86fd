"""Registry operations: register a trained version, list, resolve by version or alias.

A version's file lives in the artifact store at `models/<version id>/model.skops`, and its
compiled form, when it passed the parity check (`submitter.ml.compiled`), beside it as
`model.onnx`; `metrics["serving"]` records which of the two predictions use and why. The row
holds its metrics, feature schema and provenance (dataset version, job). Aliases
(`production`, `staging`, ...) point at a version and are moved by one update, which the
API's predictor cache sees on the next request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from submitter.db.models import Artifact, ModelAlias, ModelVersion, RegisteredModel
from submitter.db.types import utcnow
from submitter.names import NAME_RULE, FieldError, is_valid_name
from submitter.runtime import Runtime
from submitter.storage import join_key
from submitter.ttlcache import invalidate

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
DEFAULT_ALIAS = "production"
COMPILED_FILE = "model.onnx"
MODELS_TOPIC = "model-versions"
"""`ttlcache` topic of resolved versions: registering or moving an alias invalidates it."""
PLOTS_PREFIX = "plots/"
"""A version's plots are the artifacts of its training job under this folder."""


class ModelNotFound(LookupError):
    pass


class InvalidModelRequest(FieldError):
    """A registry request is refused."""


def validate_name(name: str, field: str = "model_name") -> str:
    if not is_valid_name(name):
        raise InvalidModelRequest(field, NAME_RULE)
    return name


def compiled_key(version: ModelVersion) -> str:
    """Where a version's ONNX file is: beside its skops file."""
    return join_key(version.storage_key.rsplit("/", 1)[0], COMPILED_FILE)


def register_version(
    runtime: Runtime,
    *,
    name: str,
    model_file: Path,
    fields: dict[str, Any],
    compiled: bytes | None = None,
) -> ModelVersion:
    """Store `model_file` (and `compiled`, its ONNX form) as the next version of `name`.

    `fields` are the ModelVersion columns describing it (task, algorithm, metric, metrics,
    leaderboard, params, feature_schema, classes, target, dataset_id, job_id).
    """
    validate_name(name)
    version_id = uuid.uuid4().hex
    key = join_key("models", version_id, "model.skops")
    stored = runtime.store.put_file(key, model_file)
    if compiled is not None:
        try:
            runtime.store.put_bytes(join_key("models", version_id, COMPILED_FILE), compiled)
        except BaseException:
            runtime.store.delete(key)
            raise
    row = {
        **fields,
        "id": version_id,
        "model_name": name,
        "storage_key": key,
        "size": stored.size,
        "sha256": stored.sha256,
    }
    try:
        for _ in range(10):  # racing registrations of one name retry for a version number
            try:
                with runtime.engine.begin() as connection:
                    if (
                        connection.scalar(
                            select(RegisteredModel.name).where(RegisteredModel.name == name)
                        )
                        is None
                    ):
                        connection.execute(insert(RegisteredModel), {"name": name})
                    latest = connection.scalar(
                        select(func.max(ModelVersion.version)).where(
                            ModelVersion.model_name == name
                        )
                    )
                    connection.execute(insert(ModelVersion), {**row, "version": (latest or 0) + 1})
                break
            except IntegrityError:
                continue
        else:
            raise RuntimeError(f"could not allocate a version of model {name!r}")
    except BaseException:
        runtime.store.delete(key)
        if compiled is not None:
            runtime.store.delete(join_key("models", version_id, COMPILED_FILE))
        raise
    invalidate(MODELS_TOPIC)  # "latest" changed: this process's predictions see it at once
    with runtime.sessions() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        return version


def list_models(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.reads() as session:
        latest = dict(
            session.execute(
                select(ModelVersion.model_name, func.max(ModelVersion.version)).group_by(
                    ModelVersion.model_name
                )
            )
            .tuples()
            .all()
        )
        aliases: dict[str, dict[str, int]] = {}
        for alias in session.scalars(select(ModelAlias)):
            aliases.setdefault(alias.model_name, {})[alias.alias] = alias.version
        models = session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)).all()
        return [
            {
                "name": m.name,
                "latest_version": latest.get(m.name),
                "aliases": aliases.get(m.name, {}),
                "created_at": m.created_at,
            }
            for m in models
        ]


def get_model(runtime: Runtime, name: str) -> dict[str, Any]:
    for model in list_models(runtime):
        if model["name"] == name:
            return model
    raise ModelNotFound(f"no model named {name!r}")


def list_versions(runtime: Runtime, name: str) -> list[ModelVersion]:
    get_model(runtime, name)
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(ModelVersion)
                .where(ModelVersion.model_name == name)
                .order_by(ModelVersion.version.desc())
            )
        )


def get_version(runtime: Runtime, name: str, version: int) -> ModelVersion:
    with runtime.reads() as session:
        found = session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_name == name, ModelVersion.version == version
            )
        ).first()
    if found is None:
        raise ModelNotFound(f"model {name!r} has no version {version}")
    return found


def version_plots(runtime: Runtime, versions: Sequence[ModelVersion]) -> dict[str, list[str]]:
    """The plot artifact names of each version's training job, by version id.

    Derived from the job's artifacts rather than stored on the version: they are uploaded
    when the job ends, after the version was registered (so it could be promoted without
    waiting on them), and one source means no copy to keep in step. A version whose job has
    not finished, was made before plots existed, or has been deleted has none.
    """
    job_ids = {v.job_id for v in versions if v.job_id}
    if not job_ids:
        return {}
    with runtime.reads() as session:
        rows = session.execute(
            select(Artifact.job_id, Artifact.name)
            .where(Artifact.job_id.in_(job_ids), Artifact.name.startswith(PLOTS_PREFIX))
            .order_by(Artifact.name)
        ).tuples()
        by_job: dict[str, list[str]] = {}
        for job_id, name in rows:
            by_job.setdefault(job_id, []).append(name)
    return {v.id: by_job.get(v.job_id, []) if v.job_id else [] for v in versions}


def set_alias(runtime: Runtime, name: str, alias: str, version: int) -> dict[str, Any]:
    """Point `alias` at `version` of `name` (create or move it)."""
    if not ALIAS_PATTERN.fullmatch(alias):
        raise InvalidModelRequest("alias", "1-64 lower-case letters, digits, '_' or '-'")
    get_version(runtime, name, version)
    with runtime.transaction() as session:
        row = session.get(ModelAlias, (name, alias))
        if row is None:
            session.add(ModelAlias(model_name=name, alias=alias, version=version))
        else:
            row.version = version
            row.updated_at = utcnow()
    invalidate(MODELS_TOPIC)  # seen at once here; in other processes within RESOLVE_TTL
    return {"model": name, "alias": alias, "version": version}


def resolve_version(
    runtime: Runtime, name: str, *, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    """The version to serve: `version`, else `alias`, else `production`, else the latest.

    One read-only session, since every prediction request runs this.
    """
    with runtime.reads() as session:
        if version is None:
            wanted = alias or DEFAULT_ALIAS
            version = session.scalar(
                select(ModelAlias.version).where(
                    ModelAlias.model_name == name, ModelAlias.alias == wanted
                )
            )
            if version is None and alias is not None:
                raise ModelNotFound(f"model {name!r} has no alias {alias!r}")
        query = select(ModelVersion).where(ModelVersion.model_name == name)
        if version is None:
            query = query.order_by(ModelVersion.version.desc()).limit(1)
        else:
            query = query.where(ModelVersion.version == version)
        found = session.scalars(query).first()
    if found is None:
        detail = f"no version {version}" if version is not None else "no versions"
        raise ModelNotFound(f"model {name!r} has {detail}")
    return found
