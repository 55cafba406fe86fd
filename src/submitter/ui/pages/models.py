"""Models: the registry's models, and a version's page with its CV and holdout metrics, the
leaderboard of the training that made it, its plots, aliases (promote) and a form to
predict a few rows. The same services as `/api/v1/models`."""

from __future__ import annotations

import csv
import io
import math
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from submitter.datasets import query
from submitter.datasets import service as datasets
from submitter.datasets.limits import LimitExceeded
from submitter.db.types import INT32_MAX
from submitter.registry import predictors, service
from submitter.registry.predictors import PredictIn
from submitter.registry.schemas import ModelOut, ModelVersionOut
from submitter.registry.service import DEFAULT_ALIAS, InvalidModelRequest, ModelNotFound
from submitter.ui.deps import RuntimeDep, UiSession, UiUser, UiViewer
from submitter.ui.forms import FormDep
from submitter.ui.nav import NavItem
from submitter.ui.render import UNPROCESSABLE, page

router = APIRouter(prefix="/ui/models", include_in_schema=False)
NAV = NavItem("Models", "/ui/models", order=30)

#: Rows the predict form takes ("a few"; the API takes 10,000).
MAX_PREDICT_ROWS = 100
#: Rows of the training data put in the predict form as an example.
EXAMPLE_ROWS = 3
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_LEADERBOARD_FIXED = ("model", "label", "folds", "fit_seconds")


def _version_number(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= INT32_MAX:
        raise ModelNotFound(f"model {name!r} has no version {text!r}")
    return int(text)


@router.get("")
def list_page(request: Request, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    models = [ModelOut.model_validate(m) for m in service.list_models(runtime)]
    return page(request, "models/list.html", session, models=models)


def leaderboard_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns of a leaderboard, in its order (not the `_std` companions)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            fixed = key in _LEADERBOARD_FIXED or key.endswith("_std")
            if not fixed and key not in columns:
                columns.append(key)
    return columns


def _example_csv(runtime: RuntimeDep, version: ModelVersionOut) -> str:
    """A header of the model's features and a few rows of its training data, if any."""
    names = [str(field["name"]) for field in version.feature_schema]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    if version.dataset_id:
        try:
            dataset = datasets.resolve(runtime, version.dataset_id)
            shown = query.preview(
                datasets.parquet_source(runtime, dataset), EXAMPLE_ROWS, datasets.limits(runtime)
            )
            positions = [shown["columns"].index(n) for n in names if n in shown["columns"]]
            if len(positions) == len(names):
                for row in shown["rows"]:
                    writer.writerow(["" if row[i] is None else row[i] for i in positions])
        except (datasets.DatasetNotFound, LimitExceeded):
            pass  # deleted or too big: the header alone
    return out.getvalue()


def _dataset_labels(runtime: RuntimeDep, ids: set[str]) -> dict[str, str]:
    """`name@version` of each dataset a version was trained on (`deleted` for tombstones)."""
    labels = {}
    for dataset_id in ids:
        try:
            found = datasets.resolve(runtime, dataset_id)
            labels[dataset_id] = f"{found.name}@{found.version}"
        except datasets.DatasetNotFound:
            labels[dataset_id] = f"{dataset_id[:8]} (deleted)"
    return labels


def _version_context(
    runtime: RuntimeDep, session: UiSession, name: str, number: int | None
) -> dict[str, Any]:
    model = ModelOut.model_validate(service.get_model(runtime, name))
    rows = service.list_versions(runtime, name)
    plots = service.version_plots(runtime, rows)  # as the API lists them
    versions = [
        ModelVersionOut.model_validate(v).model_copy(update={"plots": plots.get(v.id, [])})
        for v in rows
    ]
    if not versions:
        raise ModelNotFound(f"model {name!r} has no versions")
    chosen = (
        versions[0] if number is None else next((v for v in versions if v.version == number), None)
    )
    if chosen is None:
        raise ModelNotFound(f"model {name!r} has no version {number}")
    by_version: dict[int, list[str]] = {}
    for alias, target in sorted(model.aliases.items()):
        by_version.setdefault(target, []).append(alias)
    return {
        "model": model,
        "versions": versions,
        "version": chosen,
        "aliases_of": by_version,
        "dataset_labels": _dataset_labels(
            runtime, {v.dataset_id for v in versions if v.dataset_id}
        ),
        "cv": chosen.metrics.get("cv") or {},
        "holdout": chosen.metrics.get("holdout") or {},
        "leaderboard": chosen.leaderboard,
        "leaderboard_columns": leaderboard_columns(chosen.leaderboard),
        "plots": chosen.plots,
        "example": _example_csv(runtime, chosen),
        "default_alias": DEFAULT_ALIAS,
        "alias_error": None,
        "alias_value": DEFAULT_ALIAS,
    }


@router.get("/{name}")
def model_page(request: Request, name: str, runtime: RuntimeDep, session: UiViewer) -> HTMLResponse:
    """The latest version's page."""
    context = _version_context(runtime, session, name, None)
    return page(request, "models/detail.html", session, **context)


@router.get("/{name}/versions/{version}")
def version_page(
    request: Request, name: str, version: str, runtime: RuntimeDep, session: UiViewer
) -> HTMLResponse:
    context = _version_context(runtime, session, name, _version_number(version, name))
    return page(request, "models/detail.html", session, **context)


@router.post("/{name}/aliases", response_model=None)
def promote(
    request: Request, name: str, runtime: RuntimeDep, session: UiUser, form: FormDep
) -> HTMLResponse | RedirectResponse:
    """Point an alias (default `production`) at a version; back to that version's page."""
    alias = form.get("alias") or DEFAULT_ALIAS
    number = _version_number(form.get("version"), name)
    try:
        service.set_alias(runtime, name, alias, number)
    except InvalidModelRequest as error:
        context = _version_context(runtime, session, name, number)
        context.update(alias_error=f"alias: {error.reason}", alias_value=alias)
        return page(
            request,
            "models/detail.html",
            session,
            status_code=UNPROCESSABLE,
            **context,
        )
    return RedirectResponse(
        f"/ui/models/{quote(name)}/versions/{number}", status_code=status.HTTP_303_SEE_OTHER
    )


class _RowError(ValueError):
    """A row of the predict form that cannot be read; the message names it."""


def _cell(field: dict[str, Any], text: str, where: str) -> Any:
    """A CSV cell as the feature's type; text that is not one is left for the schema check
    to refuse with the field's name."""
    if text == "":
        return None
    dtype = field.get("dtype")
    if dtype == "int64":
        try:
            return int(text)
        except ValueError:
            return text
    if dtype == "float64":
        try:
            number = float(text)
        except ValueError:
            return text
        if math.isnan(number):
            return None
        if not math.isfinite(number):
            raise _RowError(f"{where}: {text!r} is not a finite number")
        return number
    if dtype == "bool":
        word = text.lower()
        return True if word in _TRUE else False if word in _FALSE else text
    return text


def parse_rows(version: ModelVersionOut, text: str) -> PredictIn:
    """CSV with a header into the API's `{"columns", "data"}` body, cells typed by the
    model's feature schema; raise `_RowError` naming the row."""
    reader = csv.reader(io.StringIO(text.strip()))
    try:
        table = [row for row in reader if row]
    except csv.Error as error:
        raise _RowError(f"not CSV: {error}") from None
    if len(table) < 2:
        raise _RowError("give a header line and at least one row")
    header, rows = [c.strip() for c in table[0]], table[1:]
    if len(rows) > MAX_PREDICT_ROWS:
        raise _RowError(f"at most {MAX_PREDICT_ROWS} rows here (the API takes 10,000)")
    fields = {str(f["name"]): f for f in version.feature_schema}
    data = []
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise _RowError(f"row {number} has {len(row)} values for {len(header)} columns")
        data.append(
            [
                _cell(fields.get(column, {}), value.strip(), f"row {number}, {column}")
                for column, value in zip(header, row, strict=True)
            ]
        )
    return PredictIn(columns=header, data=data)


@router.post("/{name}/predict")
def predict(
    request: Request, name: str, runtime: RuntimeDep, session: UiViewer, form: FormDep
) -> HTMLResponse:
    """Predict the form's rows with the version shown; the result table (a fragment)."""
    from submitter.ml.features import SchemaError

    number = _version_number(form.get("version"), name)
    version = ModelVersionOut.model_validate(service.get_version(runtime, name, number))
    error = None
    result: dict[str, Any] | None = None
    try:
        body = parse_rows(version, form.raw("rows"))
        result = predictors.predict(
            runtime, request.app.state.predictors, name, body, version=number
        )
    except _RowError as refused:
        error = str(refused)
    except SchemaError as refused:
        error = f"{refused.field}: {refused.reason}"
    except ValueError as refused:  # pydantic's, or the pipeline's on odd values
        error = str(refused).splitlines()[0][:500]
    rows: list[list[Any]] = []
    if result is not None:
        for index, prediction in enumerate(result["predictions"]):
            probabilities = result.get("probabilities")
            rows.append([prediction, *(probabilities[index] if probabilities else [])])
    return page(
        request,
        "models/_predict.html",
        session,
        status_code=status.HTTP_200_OK if error is None else UNPROCESSABLE,
        error=error,
        result=result,
        rows=rows,
    )
