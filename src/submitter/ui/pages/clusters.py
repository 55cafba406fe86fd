"""Clusters: the configured SLURM clusters, their public settings only (where and how:
never a key file, passphrase or known_hosts path), and for admins a "Check" button that
connects now and shows what the cluster offers, or why it could not be reached. The same
functions as `/api/v1/clusters` (`ClusterConfig.public`, `hpc.check.check_cluster`).

The check may take seconds (up to the cluster's connect timeout): the button posts with
htmx and shows an indicator meanwhile; without script it is a plain form and the page
comes back with the result.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse

from submitter.hpc.check import check_cluster
from submitter.hpc.clusters import ClusterError, find_cluster
from submitter.ui.deps import RuntimeDep, UiAdmin, UiSession, UiViewer
from submitter.ui.nav import NavItem
from submitter.ui.render import page

router = APIRouter(prefix="/ui/clusters", include_in_schema=False)
NAV = NavItem("Clusters", "/ui/clusters", order=80)


def _clusters(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return [cluster.public() for cluster in runtime.settings.clusters]


def _page(
    request: Request,
    runtime: RuntimeDep,
    session: UiSession,
    checks: dict[str, dict[str, Any]],
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "clusters/list.html",
        session,
        status_code=status_code,
        clusters=_clusters(runtime),
        checks=checks,
    )


@router.get("")
def clusters_page(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    return _page(request, runtime, session, {})


@router.post("/{name}/check")
def check(request: Request, name: str, runtime: RuntimeDep, session: UiAdmin) -> HTMLResponse:
    """Connect to the cluster now (a fresh connection of its own proves the settings).

    An unknown name is the API's 404. A cluster that cannot be reached or refuses us is
    not an error of this page: the outcome, with the reason, is what was asked for. htmx
    gets it as a fragment with 200 (it swaps nothing else); a plain form post gets the page
    with the API's 502, as `POST /api/v1/clusters/{name}/check` answers.
    """
    cluster = find_cluster(runtime.settings.clusters, name)
    outcome: dict[str, Any]
    try:
        outcome = {"name": cluster.name, "report": check_cluster(cluster), "error": None}
    except ClusterError as error:
        outcome = {"name": cluster.name, "report": None, "error": str(error)}
    if request.headers.get("hx-request"):
        return page(request, "clusters/_check.html", session, check=outcome)
    failed = outcome["error"] is not None
    return _page(
        request,
        runtime,
        session,
        {cluster.name: outcome},
        status.HTTP_502_BAD_GATEWAY if failed else status.HTTP_200_OK,
    )
