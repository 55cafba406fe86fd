"""`/api/v1/clusters`: the configured SLURM clusters (never their keys) and a live check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from submitter.api.deps import Admin, RuntimeDep, Viewer
from submitter.api.errors import API_ERRORS, responses
from submitter.hpc.check import check_cluster
from submitter.hpc.clusters import ClusterError, find_cluster
from submitter.jobs.schemas import Page

router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"], responses=API_ERRORS)


@router.get("", response_model=Page[dict[str, Any]])
def list_clusters(runtime: RuntimeDep, _: Viewer) -> Page[dict[str, Any]]:
    items = [cluster.public() for cluster in runtime.settings.clusters]
    return Page(items=items, total=len(items))


@router.post("/{name}/check", responses=responses(404, 502))
def check(name: str, runtime: RuntimeDep, _: Admin) -> dict[str, Any]:
    """Connect to the cluster now; 502 with the reason when that fails."""
    cluster = find_cluster(runtime.settings.clusters, name)
    try:
        return check_cluster(cluster)
    except ClusterError as error:
        raise ClusterCheckFailed(str(error)) from None


class ClusterCheckFailed(Exception):
    """The cluster is configured but could not be reached or refused us (502)."""
