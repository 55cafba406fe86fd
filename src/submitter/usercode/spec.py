"""The spec sections a `slurm` and a `command` job share, their checks at submit, and the
provided files at run time.

- `environment.venv` (`Venv`): a name and requirements; a requirement that looks like a pip
  option (`-e`, `--index-url`) or holds control characters is refused, so a spec can never
  smuggle options into `pip install`.
- `files.provide` (`ProvidedFile`): `dataset:<ref>`, `artifact:<job id>/<name>` or
  `inline:<text>` to a target inside the job folder; `files.collect` (`Files`): patterns of
  files brought back as artifacts. Both are confined to the job folder
  (`submitter.hpc.staging`).
- `env`: variable names and values (no NUL) for the job's environment.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, select

from submitter.hpc.staging import Upload, check_pattern, check_target, put_upload, select_files
from submitter.hpc.transport import MAX_WALK_ENTRIES, RemoteFile
from submitter.jobs.context import JobContext, JobFailed
from submitter.storage.keys import InvalidName

if TYPE_CHECKING:
    from submitter.hpc.transport import Transport
    from submitter.jobs.registry import ResolvedSpec

WORD = r"^[A-Za-z0-9_.+-]{1,64}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
SOURCES = ("dataset:", "artifact:", "inline:")


class Venv(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=WORD)
    packages: list[str] = Field(default_factory=list, max_length=500)
    system_site_packages: bool = False

    @field_validator("packages")
    @classmethod
    def _check_packages(cls, value: list[str]) -> list[str]:
        for package in value:
            if not package.strip() or package.startswith("-") or _CONTROL_CHARS.search(package):
                raise ValueError(
                    f"{package!r} is not a requirement (no options, no control characters)"
                )
        return value


def direct_reference(package: str) -> str | None:
    """Why `package` is not a plain requirement (a name, extras, a version range, markers)
    but a reference to code somewhere (a URL, a path, `name @ url`); None if it is plain.
    Such a reference runs what it points at when pip builds it, so it is an operator's
    choice (`SUBMITTER_VENV_DIRECT_REFERENCES`), not a user's."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(package)
    except InvalidRequirement:
        return "is a path, a URL or not a requirement at all"
    if requirement.url:
        return f"names its code directly (@ {requirement.url[:100]})"
    return None


class ProvidedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="dataset:<ref>, artifact:<job id>/<name> or inline:<text>")
    target: str = Field(description="Path inside the job folder.")

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if not value.startswith(SOURCES):
            raise ValueError(f"must start with one of {', '.join(SOURCES)}")
        return value

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        try:
            return check_target(value)
        except InvalidName as error:
            raise ValueError(str(error)) from None


class Files(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provide: list[ProvidedFile] = Field(default_factory=list, max_length=1000)
    collect: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("collect")
    @classmethod
    def _check_collect(cls, value: list[str]) -> list[str]:
        try:
            return [check_pattern(p) for p in value]
        except InvalidName as error:
            raise ValueError(str(error)) from None


def check_env(value: dict[str, str]) -> dict[str, str]:
    """A spec's `env`: proper variable names, values without NUL bytes."""
    for name, text in value.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if "\x00" in text:
            raise ValueError(f"value of {name} contains a NUL byte")
    return value


#: A spec's `env` field: variables set for the job's command.
EnvVars = Annotated[
    dict[str, str], Field(default_factory=dict, max_length=500), AfterValidator(check_env)
]


# --------------------------------------------------------------------------- submit time


def resolve_provided(connection: Connection, spec: dict[str, Any]) -> ResolvedSpec:
    """At submit: dataset refs in `files.provide` become ids (pinned); artifacts must exist
    (or belong to a job that has not ended yet, typically a dependency)."""
    from submitter.datasets.service import find_id
    from submitter.db.models import Artifact, Job
    from submitter.jobs.states import TERMINAL

    errors: list[dict[str, Any]] = []
    dataset_ids: list[str] = []
    provide = [dict(item) for item in spec["files"]["provide"]]
    for index, item in enumerate(provide):
        source: str = item["source"]
        loc = ["files", "provide", index, "source"]
        if source.startswith("dataset:"):
            dataset_id = find_id(connection, source.removeprefix("dataset:"))
            if dataset_id is None:
                errors.append(
                    spec_error(loc, f"no dataset {source[8:]!r}", "unknown_dataset", source)
                )
                continue
            item["source"] = f"dataset:{dataset_id}"
            dataset_ids.append(dataset_id)
        elif source.startswith("artifact:"):
            # A job that has not ended yet (typically a dependency) may still write it; the
            # run then fails clearly if it did not. A finished job must have it now.
            job_id, _, name = source.removeprefix("artifact:").partition("/")
            state = connection.scalar(select(Job.state).where(Job.id == job_id))
            found = connection.scalar(
                select(Artifact.storage_key).where(Artifact.job_id == job_id, Artifact.name == name)
            )
            if state is None or (found is None and state in TERMINAL):
                msg = f"no artifact {name!r} of job {job_id!r} (artifact:<job id>/<name>)"
                errors.append(spec_error(loc, msg, "unknown_artifact", source))
    resolved = {**spec, "files": {**spec["files"], "provide": provide}}
    return resolved, dataset_ids, errors


def venv_reference_errors(spec: dict[str, Any], allowed: bool) -> list[dict[str, Any]]:
    """At submit: a venv package that is a direct reference, unless the operator `allowed`
    them (`SUBMITTER_VENV_DIRECT_REFERENCES`): for every kind that builds a venv."""
    venv = (spec.get("environment") or {}).get("venv")
    if not venv or allowed:
        return []
    errors = []
    for index, package in enumerate(venv["packages"]):
        why = direct_reference(package)
        if why is not None:
            msg = (
                f"{package[:100]!r} {why}: only names and version ranges from the package "
                "index (an operator may allow more: SUBMITTER_VENV_DIRECT_REFERENCES)"
            )
            loc = ["environment", "venv", "packages", index]
            errors.append(spec_error(loc, msg, "direct_reference", package))
    return errors


def spec_error(loc: list[Any], msg: str, kind: str, value: Any) -> dict[str, Any]:
    """A pydantic-style error under `body.spec` (what InvalidJob carries to a 422)."""
    return {"loc": ["body", "spec", *loc], "msg": msg, "type": kind, "input": value}


# --------------------------------------------------------------------------- run time


def upload_of(ctx: JobContext, item: ProvidedFile) -> Upload:
    """Where a provided file's bytes come from (the store key or the inline text)."""
    kind, _, ref = item.source.partition(":")
    if kind == "inline":
        return Upload(item.target, inline=ref)
    if kind == "dataset":
        from submitter.datasets.service import resolve

        dataset = resolve(ctx.runtime, ref)
        return Upload(
            item.target, store_key=dataset.storage_key, as_csv=item.target.endswith(".csv")
        )
    from submitter.jobs.artifacts import artifact_key

    job_id, _, name = ref.partition("/")
    key = artifact_key(job_id, name)
    if not ctx.runtime.store.exists(key):
        raise JobFailed(f"{item.source}: job {job_id} has no artifact {name!r}")
    return Upload(item.target, store_key=key)


def stage_provided(
    ctx: JobContext, transport: Transport, folder: str, provide: list[ProvidedFile]
) -> None:
    """Put every provided file into the job folder (over SFTP, or on this host)."""
    from submitter.datasets.limits import DatasetLimits

    limits = DatasetLimits.from_settings(ctx.runtime.settings)
    for item in provide:
        ctx.check_cancelled()
        size = put_upload(transport, ctx.runtime.store, folder, upload_of(ctx, item), limits)
        ctx.log(f"staged {item.source.split(':', 1)[0]} → {item.target} ({size} bytes)")


def collect_matching(
    ctx: JobContext,
    transport: Transport,
    folder: str,
    always: list[str],
    patterns: list[str],
    files: list[RemoteFile] | None = None,
) -> list[str]:
    """Copy the files of the job folder matching `always` or `patterns` into the job's
    workdir (they become its artifacts); warn about patterns that matched nothing.
    `files`: the folder's listing if the caller has it (an array's bulk lookup)."""
    files = list(transport.walk(folder)) if files is None else files

    def copy(remote: RemoteFile, local: Path) -> bool:
        transport.get(f"{folder}/{remote.path}", local)
        return True

    return _collect(ctx, files, always, patterns, copy)


def _collect(
    ctx: JobContext,
    files: list[RemoteFile],
    always: list[str],
    patterns: list[str],
    copy: Callable[[RemoteFile, Path], bool],
) -> list[str]:
    """The files matching a pattern, each `copy`-ed into the workdir (False: skipped)."""
    names = []
    for remote in select_files(files, [*always, *patterns]):
        ctx.check_cancelled()
        local = ctx.workdir / remote.path
        local.parent.mkdir(parents=True, exist_ok=True)
        if copy(remote, local):
            names.append(remote.path)
    missing = [p for p in patterns if not any(select_files(files, [p]))]
    if missing:
        ctx.log(f"no file matched: {', '.join(missing)}", "WARNING")
    ctx.log(f"collected {len(names)} file(s) from the job folder")
    return names


def regular_files(folder: Path) -> list[RemoteFile]:
    """The files a job may hand back from its folder on this host: regular files with one
    link, owned by the sandbox's (here: this process's) uid, found without following a link.
    A symbolic or hard link to a worker file (`ln $SUBMITTER_HOME/submitter.db out/db`) is
    not one of them."""
    uid = os.geteuid()
    found: list[RemoteFile] = []
    pending, seen = [""], 0
    while pending and seen < MAX_WALK_ENTRIES:
        relative = pending.pop()
        try:
            entries = list(os.scandir(folder / relative))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                pending.append(path)
            elif _collectable(info, uid):
                found.append(RemoteFile(path, info.st_size))
    return found


def _collectable(info: os.stat_result, uid: int) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == uid


def collect_from_folder(ctx: JobContext, folder: Path, patterns: list[str]) -> list[str]:
    """`collect_matching` for a job folder on this host whose processes have all ended:
    only `regular_files`, each opened without following a link and checked again."""
    uid = os.geteuid()

    def copy(remote: RemoteFile, local: Path) -> bool:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            source = os.open(folder / remote.path, flags)
        except OSError as error:
            ctx.log(f"not collected: {remote.path} ({error.strerror})", "WARNING")
            return False
        with open(source, "rb") as stream:
            if not _collectable(os.fstat(source), uid):
                return False
            with open(local, "wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
        return True

    return _collect(ctx, regular_files(folder), [], patterns, copy)
