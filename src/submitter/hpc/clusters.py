"""Cluster definitions: which SLURM clusters Submitter may use, and how to reach them.

Clusters come only from the configuration (`clusters:` in the YAML file), never from a job
request: a job names a cluster, the operator decides where that is and with which key. The
passphrase of a key is read from an environment variable at connect time, so no secret is
ever part of the settings object, a job, a log line or an API answer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ClusterConfig(BaseModel):
    """One entry of `clusters:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    transport: Literal["ssh", "local"] = "ssh"
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    passphrase_env: str | None = Field(
        default=None, description="Environment variable holding the key's passphrase."
    )
    known_hosts: Path | None = Field(
        default=None, description="known_hosts file; unknown or changed host keys are refused."
    )
    workdir: str = Field(description="Remote folder; jobs live in <workdir>/submitter/<job id>.")
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run before every command and batch script (trusted: config).",
    )
    partition: str | None = None
    account: str | None = None
    python: str = Field(default="python3", description="Python used to create venvs.")
    accounting: Literal["auto", "sacct", "scontrol"] = Field(
        default="auto", description="auto: sacct when the cluster has accounting, else scontrol."
    )
    keep_job_folders: Literal["always", "failed", "never"] = Field(
        default="failed",
        description="Job folders left on the cluster once jobs ended (outputs are in the "
        "artifact store): all, only those of jobs that did not succeed, or none.",
    )
    max_jobs: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Jobs Submitter keeps in SLURM at once (array tasks counted); more wait "
        "in Submitter in phase `throttled` and are released as others end, oldest first.",
    )
    connect_timeout: float = Field(default=15.0, gt=0)
    command_timeout: float = Field(default=600.0, gt=0)
    venv_timeout: float = Field(default=3600.0, gt=0, description="Creating one venv.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("letters, digits, '_', '.', '-' only (at most 63)")
        return value

    @field_validator("workdir")
    @classmethod
    def _check_workdir(cls, value: str) -> str:
        if not value.startswith("/") and not value.startswith("~/") and value != "~":
            raise ValueError("must be an absolute path (or start with ~/)")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _check_transport(self) -> ClusterConfig:
        if self.transport == "ssh":
            missing = [
                f for f in ("host", "user", "key_file", "known_hosts") if not getattr(self, f)
            ]
            if missing:
                raise ValueError(f"transport ssh needs {', '.join(missing)}")
        return self

    def passphrase(self) -> str | None:
        """The key's passphrase, read now from the environment (never stored)."""
        if not self.passphrase_env:
            return None
        value = os.environ.get(self.passphrase_env)
        if value is None:
            raise ClusterError(
                f"cluster {self.name}: environment variable {self.passphrase_env} "
                "(the key's passphrase) is not set"
            )
        return value

    def public(self) -> dict[str, Any]:
        """What `GET /api/v1/clusters` shows: where and how, never key material."""
        return {
            "name": self.name,
            "transport": self.transport,
            "host": self.host,
            "port": self.port if self.transport == "ssh" else None,
            "user": self.user,
            "workdir": self.workdir,
            "partition": self.partition,
            "account": self.account,
            "accounting": self.accounting,
            "max_jobs": self.max_jobs,
        }


class ClusterError(Exception):
    """A cluster could not be used: unknown, unreachable, refused, or a command failed."""


class UnknownCluster(ClusterError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        shown = ", ".join(known) if known else "none are configured (clusters: in the YAML)"
        super().__init__(f"unknown cluster {name!r}; known clusters: {shown}")
        self.name = name


def find_cluster(clusters: list[ClusterConfig], name: str) -> ClusterConfig:
    for cluster in clusters:
        if cluster.name == name:
            return cluster
    raise UnknownCluster(name, [c.name for c in clusters])
