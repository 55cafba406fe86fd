"""Train: a form for the `train` job (dataset, target from its columns, task, models,
folds) that submits it as `POST /api/v1/jobs` does and opens the job's live page."""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from submitter.datasets import service as datasets
from submitter.datasets.schemas import DatasetOut
from submitter.jobs import service
from submitter.roles import Role
from submitter.ui.deps import RuntimeDep, UiSession, UiUser, UiViewer
from submitter.ui.errors import message_of
from submitter.ui.forms import FormDep
from submitter.ui.nav import NavItem
from submitter.ui.render import UNPROCESSABLE, page

router = APIRouter(prefix="/ui/train", include_in_schema=False)
NAV = NavItem("Train", "/ui/train", order=40, role=Role.user)

TASKS = ("auto", "classification", "regression")


CATALOGUE_MODULE = "submitter.ml.models"


def warm_up() -> None:
    """Import the model catalogue (scikit-learn: seconds) in the background, so that the
    train form, which lists it, opens at once. Called at sign-in; the import is the one
    the first train job submitted would make in this process anyway."""
    if CATALOGUE_MODULE not in sys.modules:
        threading.Thread(
            target=importlib.import_module, args=(CATALOGUE_MODULE,), daemon=True
        ).start()


def _catalogue() -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """(name, label) of every model this installation trains, and the default set."""
    from submitter.ml.models import CATALOGUE, DEFAULT_MODELS

    return [(name, spec.label) for name, spec in CATALOGUE.items()], DEFAULT_MODELS


def _datasets(runtime: RuntimeDep) -> list[DatasetOut]:
    items, _ = datasets.list_datasets(runtime, limit=1000)
    return [DatasetOut.model_validate(d) for d in items]


def _columns(runtime: RuntimeDep, ref: str) -> list[str]:
    if not ref:
        return []
    try:
        return [str(c["name"]) for c in datasets.resolve(runtime, ref).columns]
    except datasets.DatasetNotFound:
        return []


def _form_page(
    request: Request,
    runtime: RuntimeDep,
    session: UiSession,
    values: dict[str, Any],
    error: str | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    models, defaults = _catalogue()
    if values.get("models") is None:
        values["models"] = list(defaults)
    found = _datasets(runtime)
    options = [
        (f"{d.name}@{d.version}", f"{d.name}@{d.version} ({d.row_count} rows)") for d in found
    ]
    chosen = values.get("dataset", "")
    for d in found:  # an id or a bare name picks its option (the list is newest first)
        if chosen in (d.id, d.name):
            values["dataset"] = chosen = f"{d.name}@{d.version}"
            break
    if chosen and chosen not in {ref for ref, _ in options}:
        options.append((chosen, chosen))
    columns = _columns(runtime, chosen)
    if not values.get("target") and columns:
        values["target"] = columns[-1]
    return page(
        request,
        "train/form.html",
        session,
        status_code=status_code,
        datasets=found,
        dataset_options=options,
        columns=columns,
        catalogue=models,
        tasks=TASKS,
        values=values,
        error=error,
    )


@router.get("")
def form_page(
    request: Request, runtime: RuntimeDep, session: UiUser, dataset: str | None = None
) -> HTMLResponse:
    ref = dataset or ""
    if not ref:
        found = _datasets(runtime)
        ref = f"{found[0].name}@{found[0].version}" if found else ""
    name = ref.split("@", 1)[0]
    values = {"dataset": ref, "target": "", "model_name": name, "task": "auto", "folds": "5"}
    return _form_page(request, runtime, session, values)


@router.get("/targets")
def targets_fragment(
    request: Request, runtime: RuntimeDep, session: UiViewer, dataset: str = ""
) -> HTMLResponse:
    """The target's options for the dataset picked (the form reloads them on change)."""
    columns = _columns(runtime, dataset)
    return page(
        request,
        "train/_targets.html",
        session,
        columns=columns,
        target=columns[-1] if columns else "",
    )


@router.post("", response_model=None)
def submit(request: Request, runtime: RuntimeDep, session: UiUser, form: FormDep) -> Response:
    values: dict[str, Any] = {
        "dataset": form.get("dataset"),
        "target": form.get("target"),
        "model_name": form.get("model_name"),
        "task": form.get("task") or "auto",
        "folds": form.get("folds") or "5",
        "models": form.all("models"),
    }
    spec: dict[str, Any] = {
        "dataset": values["dataset"],
        "target": values["target"],
        "model_name": values["model_name"],
        "task": values["task"],
        # Every default ticked: leave the choice to `default_models`, which picks per task
        # and size (the form lists the union of both tasks' defaults).
        "models": None
        if set(values["models"]) == set(_catalogue()[1])
        else (values["models"] or None),
    }
    folds = values["folds"]
    spec["folds"] = int(folds) if folds.isdigit() and len(folds) < 6 else folds
    try:
        job, _ = service.submit(runtime, kind="train", spec=spec, owner=session.principal.id)
    except service.InvalidJob as invalid:
        return _form_page(
            request,
            runtime,
            session,
            values,
            error=message_of({"detail": invalid.errors}),
            status_code=UNPROCESSABLE,
        )
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=status.HTTP_303_SEE_OTHER)
