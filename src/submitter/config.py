"""Settings: every `SUBMITTER_*` value, from the environment and an optional YAML file.

Precedence is environment > YAML file (`SUBMITTER_CONFIG`) > defaults. The defaults are the
embedded stack: a SQLite database, a SQLite-backed Celery broker and a local artifact folder,
all under `SUBMITTER_HOME`, so one laptop runs Submitter with no servers at all.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from submitter.hpc.clusters import ClusterConfig

#: Built-in maintenance tasks, in the order their intervals appear in `SUBMITTER_SCHEDULER_TIMES`.
MAINTENANCE_TASKS = ("reconcile", "hpc_monitor", "schedules", "hpc_cleanup")
DEFAULT_SCHEDULER_TIMES = "10|30|1|600"


class ConfigError(Exception):
    """A setting is invalid; the message names the `SUBMITTER_*` key and the reason."""


def parse_scheduler_times(value: str) -> dict[str, float]:
    """Parse `SUBMITTER_SCHEDULER_TIMES`.

    Positional seconds (`10|30|1|600`: reconcile, hpc_monitor, schedules, hpc_cleanup) or
    named (`reconcile=5|hpc_monitor=60`). `schedules` is how often beat looks for due
    schedules, `hpc_cleanup` how often ended jobs' folders are removed from the clusters.
    Missing entries keep their default.
    """
    defaults = dict(zip(MAINTENANCE_TASKS, (10.0, 30.0, 1.0, 600.0), strict=True))
    parts = [p.strip() for p in value.split("|") if p.strip()]
    result = dict(defaults)
    for index, part in enumerate(parts):
        if "=" in part:
            name, _, seconds = part.partition("=")
            name = name.strip()
            if name not in MAINTENANCE_TASKS:
                raise ValueError(f"unknown maintenance task {name!r}; known: {MAINTENANCE_TASKS}")
        else:
            if index >= len(MAINTENANCE_TASKS):
                raise ValueError(f"at most {len(MAINTENANCE_TASKS)} intervals: {MAINTENANCE_TASKS}")
            name, seconds = MAINTENANCE_TASKS[index], part
        try:
            interval = float(seconds)
        except ValueError:
            raise ValueError(f"{seconds!r} is not a number of seconds") from None
        if interval <= 0:
            raise ValueError(f"interval for {name} must be > 0, got {interval}")
        result[name] = interval
    return result


class Settings(BaseSettings):
    """All of Submitter's settings. Field `x` is read from `SUBMITTER_X` or key `x` in YAML."""

    model_config = SettingsConfigDict(
        env_prefix="SUBMITTER_", extra="forbid", validate_default=True, populate_by_name=True
    )

    home: Path = Field(default=Path("./.submitter"), description="Folder of the embedded stack.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the metadata DB.")
    broker_url: str | None = Field(default=None, description="Celery broker URL.")
    redis_url: str | None = Field(default=None, description="Redis for locks and rate limits.")
    storage_url: str | None = Field(default=None, description="file:///... or s3://bucket/prefix")
    s3_endpoint_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=7500, ge=1, le=65535)
    admin_key: SecretStr | None = Field(default=None, description="Bootstrap admin API key.")
    flower_user: str = "admin"
    flower_password: SecretStr | None = Field(
        default=None, description="Flower's basic-auth password; `submitter flower` needs it."
    )
    flower_port: int = Field(default=7501, ge=1, le=65535)
    scheduler_times: str = DEFAULT_SCHEDULER_TIMES
    config: Path | None = Field(default=None, description="YAML file with the same keys.")

    job_lease_seconds: float = Field(default=30.0, ge=1.0, description="Heartbeat lease per job.")
    job_max_attempts: int = Field(default=3, ge=1, description="Runs before a lost job fails.")
    requeue_after_seconds: float = Field(
        default=60.0, gt=0, description="A queued job not started this long is re-enqueued."
    )
    cancel_grace_seconds: float = Field(
        default=5.0, ge=0, description="Time a cancelled job gets to stop before it is killed."
    )
    visibility_timeout_seconds: int = Field(
        default=24 * 3600, ge=60, description="Redis/SQS redelivery timeout; > longest job."
    )
    max_upload_bytes: int = Field(
        default=1 << 30, ge=1, description="Largest dataset upload; larger ones get 413."
    )
    max_request_bytes: int = Field(
        default=16 << 20,
        ge=1024,
        description="Largest request body other than a dataset upload; larger ones get 413.",
    )
    model_cache_bytes: int = Field(
        default=1 << 30, ge=1, description="Memory for loaded models in each API process."
    )
    max_dataset_bytes: int = Field(
        default=8 << 30,
        ge=1 << 20,
        description="Largest decoded (in-memory) size of a dataset; a compressed upload that "
        "expands past it is refused (422) while it streams, and stored ones are not read.",
    )
    max_row_group_bytes: int = Field(
        default=256 << 20,
        ge=1 << 16,
        description="Largest uncompressed Parquet row group: a reader holds one at a time, so "
        "this bounds the memory of every dataset read; upload larger ones re-chunked.",
    )
    max_cell_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest single value (cell) of a dataset, and of one CSV row.",
    )
    events_max_seconds: float = Field(
        default=3600.0,
        ge=1.0,
        description="Longest life of one job event stream (`/api/v1/jobs/{id}/events`); it "
        "then ends with a `reconnect` event, so no connection is held forever.",
    )
    worker_concurrency: int | None = Field(default=None, ge=1)
    worker_queues: str = "default,train,hpc"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    service_log_enabled: bool = Field(
        default=True,
        description="Also keep each service's (api, worker, beat, flower) recent log records "
        "in the metadata DB, for GET /api/v1/logs/{service}; stdout logs are written either way.",
    )
    service_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Least level of the records kept in the metadata DB."
    )
    service_log_max_rows: int = Field(
        default=100_000, ge=100, le=100_000_000, description="Service log records kept at most."
    )
    service_log_max_age_seconds: float = Field(
        default=7 * 86400, ge=60, le=10 * 365 * 86400, description="Older records are deleted."
    )
    clusters: list[ClusterConfig] = Field(
        default_factory=list, description="SLURM clusters (YAML only; see submitter.hpc)."
    )
    command_jobs_enabled: bool | None = Field(
        default=None,
        description="May users run `command` jobs (their own code, on the workers)? Unset: "
        "yes on the embedded stack (one person's machine, where the user is the operator), "
        "no on a server deployment until the operator says true. Read by the API (submit: "
        "422) and by each worker (a job reaching a worker with it off fails).",
    )
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        default="auto",
        description="How user code (command jobs, their venv builds) is confined: `bwrap` "
        "(bubblewrap: own user, PID, mount, IPC, UTS and network namespaces; jobs that cannot "
        "be sandboxed fail), `none` (the worker's user; only admin keys may submit command "
        "jobs), `auto` (bwrap where a probe sandbox starts on this host, else none).",
    )
    sandbox_paths: str = Field(
        default="",
        description="Extra host folders shown read-only inside the sandbox, comma-separated "
        "(e.g. /opt/conda): system folders (/usr, /lib*, a few files of /etc) and the "
        "worker's Python are shown already.",
    )
    sandbox_cgroups: bool = Field(
        default=True,
        description="Hold a sandbox's memory, CPU and process limits with control groups "
        "(cgroup v1) where this host lets the worker make them; false, or where it cannot: "
        "a watchdog over the sandbox's processes holds them.",
    )
    command_max_processes: int = Field(
        default=1024,
        ge=1,
        le=4_194_304,
        description="Processes and threads a command job may have at once, unless its "
        "resources.processes says otherwise.",
    )
    command_max_disk: str = Field(
        default="20G",
        pattern=r"^\d{1,12}[KMGT]?$",
        description="Bytes a command job's folder (and any one file it writes) may hold, "
        "unless its resources.disk says otherwise.",
    )
    venv_direct_references: bool = Field(
        default=False,
        description="Allow venv packages given as URLs, paths or `name @ url` (their build "
        "runs whatever the reference holds); off: only names and version ranges from the "
        "package index.",
    )
    max_metrics_per_job: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Metric values kept per job ($SUBMITTER_METRICS); later ones are dropped.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("SUBMITTER_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            if not Path(yaml_file).is_file():
                raise ConfigError(f"SUBMITTER_CONFIG: file {yaml_file!r} does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @field_validator("log_level", "service_log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("scheduler_times")
    @classmethod
    def _check_scheduler_times(cls, value: str) -> str:
        parse_scheduler_times(value)
        return value

    @field_validator("clusters")
    @classmethod
    def _unique_clusters(cls, value: list[ClusterConfig]) -> list[ClusterConfig]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError(f"cluster names must be unique, got {names}")
        return value

    @field_validator("database_url", "broker_url", "redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a URL (expected scheme://...)")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        home = self.home.expanduser().resolve()
        self.home = home
        if self.database_url is None:
            self.database_url = f"sqlite:///{home / 'submitter.db'}"
        if self.broker_url is None:
            self.broker_url = f"sqla+sqlite:///{home / 'broker.db'}"
        if self.storage_url is None:
            self.storage_url = (home / "artifacts").as_uri()
        return self

    # ---- derived values -------------------------------------------------------------
    @property
    def db_url(self) -> str:
        """The database URL; always set after validation."""
        assert self.database_url is not None
        # Plain postgresql:// means psycopg 3 here, the driver we ship.
        if self.database_url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.database_url.removeprefix("postgresql://")
        if self.database_url.startswith("postgres://"):
            return "postgresql+psycopg://" + self.database_url.removeprefix("postgres://")
        return self.database_url

    @property
    def broker(self) -> str:
        assert self.broker_url is not None
        return self.broker_url

    @property
    def is_embedded_db(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def maintenance_intervals(self) -> dict[str, float]:
        return parse_scheduler_times(self.scheduler_times)

    @property
    def command_jobs_allowed(self) -> bool:
        """`command_jobs_enabled`, with its default resolved (on for the embedded stack)."""
        if self.command_jobs_enabled is None:
            return self.is_embedded_db
        return self.command_jobs_enabled

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = "_".join(str(p) for p in item["loc"] if isinstance(p, str)) or "settings"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"SUBMITTER_{key.upper()}: {item['msg']}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and YAML); raise ConfigError naming a bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
