"""Job artifacts: the files a job wrote into its workdir, kept in the store under the job."""

from __future__ import annotations

from sqlalchemy import select

from submitter.db.models import Artifact, Job
from submitter.jobs.service import JobNotFound
from submitter.runtime import Runtime
from submitter.storage import join_key, safe_name


class ArtifactNotFound(LookupError):
    pass


def artifact_key(job_id: str, name: str) -> str:
    """`jobs/<id>/artifacts/<name>`; every segment of `name` is checked (no `..`, no `/x`)."""
    return join_key("jobs", job_id, "artifacts", *(safe_name(p) for p in name.split("/")))


def list_artifacts(runtime: Runtime, job_id: str) -> list[Artifact]:
    with runtime.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(job_id)
        return list(
            session.scalars(
                select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
            )
        )


def get_artifact(runtime: Runtime, job_id: str, name: str) -> Artifact:
    with runtime.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(job_id)
        artifact = session.get(Artifact, (job_id, name))
        if artifact is None:
            raise ArtifactNotFound(f"job {job_id} has no artifact {name!r}")
        return artifact
