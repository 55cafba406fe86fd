"""SQLAlchemy models: jobs, their dependencies and log lines, and API keys.

The `jobs` table is the source of truth for every job; broker messages only carry ids.
Columns that the engine updates conditionally (`state`, `run_token`, `lease_expires_at`) are
what make redelivered messages harmless: see `submitter.worker.runner`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from submitter.db.types import JSONType, UTCDateTime, utcnow

#: Autoincrement BIGINT on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    state: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float | None] = mapped_column(Float, default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[Any | None] = mapped_column(JSONType, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    owner: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    run_token: Mapped[str | None] = mapped_column(String(32), default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    #: The schedule that submitted this job (no foreign key: history outlives the schedule).
    schedule_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    #: The sweep that made this job (one child per combination of its matrix).
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE", name="fk_jobs_parent_id"), default=None
    )
    #: On a sweep: at most this many of its children run at once (enforced at claim).
    max_parallel: Mapped[int | None] = mapped_column(Integer, default=None)
    #: On a sweep's child: which combination of the matrix it runs (its array task id too).
    sweep_index: Mapped[int | None] = mapped_column(Integer, default=None)

    dependencies: Mapped[list[JobDependency]] = relationship(
        foreign_keys="JobDependency.job_id", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_state_lease", "state", "lease_expires_at"),
        Index("ix_jobs_created_at", "created_at"),
        # /metrics reads the jobs that started or finished since its last scrape, a range
        # on these (see submitter.api.metrics.JobTimings): never the whole table.
        Index("ix_jobs_started_at", "started_at"),
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_parent_id_state", "parent_id", "state"),
    )

    @property
    def depends_on(self) -> list[str]:
        return [d.depends_on_id for d in self.dependencies]


class JobDependency(Base):
    """Job `job_id` may start only after `depends_on_id` has succeeded."""

    __tablename__ = "job_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class JobLog(Base):
    """One line of a job's log. In the DB so every host (API, any worker) sees it."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    message: Mapped[str] = mapped_column(Text)


class JobMetric(Base):
    """One value a job reported from inside (`$SUBMITTER_METRICS`): name, step, value."""

    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_job_metrics_job_id_name_step", "job_id", "name", "step"),)


class ApiKey(Base):
    """An API key. Only a SHA-256 of the key is stored; the key is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Dataset(Base):
    """One version of a named dataset, stored as Parquet in the artifact store.

    A deleted version keeps its row as a tombstone (`deleted_at` set, the Parquet gone from
    the store): model versions and jobs that read it still say which data that was, and
    `name@version` never comes to mean other data.
    """

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    row_count: Mapped[int] = mapped_column(BigInteger)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_datasets_name_version"),
        Index("ix_datasets_name_sha256", "name", "sha256"),
    )


class DatasetReference(Base):
    """Job `job_id` reads dataset `dataset_id`: the dataset cannot be deleted while it is active."""

    __tablename__ = "dataset_references"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class Artifact(Base):
    """A file a job wrote, kept in the artifact store under the job."""

    __tablename__ = "artifacts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(600))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegisteredModel(Base):
    """A named model in the registry; its versions are what get trained and served."""

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """One trained model: its file in the store, metrics, schema and where it came from."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(
        ForeignKey("registered_models.name", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    algorithm: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    leaderboard: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    feature_schema: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    classes: Mapped[list[Any] | None] = mapped_column(JSONType, default=None)
    target: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), default=None, index=True
    )
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    storage_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_versions"),)


class ModelAlias(Base):
    """`production` → version 3 of a model. Moving an alias is one row update."""

    __tablename__ = "model_aliases"

    model_name: Mapped[str] = mapped_column(
        ForeignKey("registered_models.name", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Schedule(Base):
    """A job request submitted periodically by beat (see submitter.schedules).

    `next_run_at` is also the claim: beat advances it with a conditional UPDATE, so two beat
    processes never fire the same run.
    """

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    cron: Mapped[str | None] = mapped_column(String(200), default=None)
    interval_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_overlap: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    #: What happened at the last fire when no job was submitted (skipped, refused).
    last_message: Mapped[str | None] = mapped_column(Text, default=None)
    runs: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_schedules_enabled_next_run_at", "enabled", "next_run_at"),)


class Worker(Base):
    """A `submitter worker` process as it reports itself (see submitter.worker.presence).

    Kept in the database, not asked over the broker: it works on every broker (the embedded
    SQLite one has no broadcast), and a worker that died without a word shows as offline.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # Celery node name
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSONType, default=list)
    concurrency: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class BeatTask(Base):
    """How beat's built-in tasks (reconcile, hpc_monitor, schedules, hpc_cleanup) fared:
    written by beat (see submitter.worker.beat_status), read by `/api/v1/tasks` and
    `/metrics`, so "is beat running?" has an answer."""

    __tablename__ = "beat_tasks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    interval_seconds: Mapped[float] = mapped_column(Float)
    last_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_duration_seconds: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    runs: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    beat: Mapped[str] = mapped_column(String(255))  # host/pid of the beat that wrote it


class HpcCommandCount(Base):
    """Commands beat's HPC tasks ran on each cluster, totalled over every beat that ran:
    written by beat with its task status (coalesced, see submitter.worker.beat_status), read
    by `/metrics` as `submitter_hpc_commands_total`. Beat's own in-memory counters are in a
    process Prometheus never scrapes."""

    __tablename__ = "hpc_command_counts"

    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster: Mapped[str] = mapped_column(String(100), primary_key=True)
    command: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class ServiceLog(Base):
    """One log record of a service process (api, worker, beat, flower) on some host.

    Written in batches by each process's `submitter.servicelogs.handler.ServiceLogHandler`
    and bounded by count and age (`SUBMITTER_SERVICE_LOG_MAX_ROWS`, `..._MAX_AGE_SECONDS`),
    so operators can read every process's recent records at `GET /api/v1/logs/{service}`
    without a log collector. `level` is the numeric level (`logging.WARNING` is 30), so a
    minimum level is an indexable range. No foreign key on `job_id`: records outlive jobs
    and must never make a job write wait or fail.
    """

    __tablename__ = "service_logs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    service: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    logger: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (
        # Each filter of the route narrows by one of these, newest (highest id) first.
        Index("ix_service_logs_service_id", "service", "id"),
        Index("ix_service_logs_host_id", "host", "id"),
        Index("ix_service_logs_job_id_id", "job_id", "id"),
        # Retention by age deletes the oldest by time.
        Index("ix_service_logs_time", "time"),
    )
