"""Sweeps end to end on PostgreSQL + Redis with two real worker processes (four slots):
max_parallel checked from the rows' own start and finish times, the parent's outcome,
cancel, the result table, 422s, and a small train sweep."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from submitter.db.models import Job
from tests.conftest import Backend, Stack, eventually, make_backend, make_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        make_backend("postgres-redis", tmp_path_factory.mktemp("sweeps")) as backend,
        _with_command_jobs(backend),
        make_stack(backend) as made,
    ):
        made.start("worker", "--concurrency=2")  # a second worker host: 4 slots in all
        yield made


@contextmanager
def _with_command_jobs(backend: Backend) -> Iterator[None]:
    """Command jobs on (the metrics sweep's children report metrics from a shell)."""
    backend.env["SUBMITTER_COMMAND_JOBS_ENABLED"] = "true"
    yield


def _sweep(stack: Stack, expect: int = 202, **spec: Any) -> dict[str, Any]:
    response = stack.api.post(
        "/api/v1/jobs", json={"kind": "sweep", "spec": spec}, headers=stack.headers("user")
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def _children(stack: Stack, parent_id: str) -> list[Job]:
    with stack.runtime.reads() as session:
        return list(
            session.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.sweep_index))
        )


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = most = 0
    for _, step in events:  # an end at the same instant as a start comes first (-1 < 1)
        running += step
        most = max(most, running)
    return most


def test_echo_sweep_never_runs_more_than_max_parallel(stack: Stack) -> None:
    sweep = _sweep(
        stack,
        kind="echo",
        spec={"message": "n={{n}} s={{s}}", "sleep_seconds": "{{s}}"},
        matrix={"n": list(range(6)), "s": [0.5, 1.0]},
        max_parallel=3,
    )
    assert sweep["kind"] == "sweep"
    done = stack.wait(sweep["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert done["message"] == "all 12 children succeeded"
    assert done["result"] == {"children": 12, "succeeded": 12, "failed": 0, "cancelled": 0}
    children = _children(stack, sweep["id"])
    assert len(children) == 12 and all(c.state == "succeeded" for c in children)
    assert children[3].spec == {"message": "n=1 s=1.0", "sleep_seconds": 1.0, "fail": False}
    intervals = [(c.started_at, c.finished_at) for c in children]
    assert all(s and e for s, e in intervals)
    assert _most_at_once(intervals) <= 3  # type: ignore[arg-type]
    assert len({c.worker for c in children}) >= 2  # both worker processes took children

    table = stack.api.get(
        f"/api/v1/jobs/{sweep['id']}/sweep",
        params={"best_by": "-sleep_seconds"},
        headers=stack.headers("viewer"),
    )
    assert table.status_code == 200, table.text
    body = table.json()
    assert body["parameters"] == ["n", "s"] and "sleep_seconds" in body["columns"]
    assert [r["values"]["sleep_seconds"] for r in body["rows"]][:6] == [0.5] * 6
    assert body["best"] == body["rows"][0]["job_id"] and body["rows"][0]["params"]["s"] == 0.5
    not_a_sweep = stack.api.get(
        f"/api/v1/jobs/{children[0].id}/sweep", headers=stack.headers("viewer")
    )
    assert not_a_sweep.status_code == 404


def test_failed_child_fails_the_sweep_and_cancel_stops_the_rest(stack: Stack) -> None:
    failing = _sweep(
        stack, kind="echo", spec={"message": "x", "fail": "{{f}}"}, matrix={"f": [False, True]}
    )
    done = stack.wait(failing["id"], timeout=60)
    assert done["state"] == "failed" and done["error"] == "1 of 2 children failed"

    slow = _sweep(
        stack,
        kind="echo",
        spec={"message": "job {{i}}", "sleep_seconds": 60},
        matrix={"i": [1, 2, 3, 4]},
        max_parallel=1,
    )
    first = eventually(
        lambda: [c for c in _children(stack, slow["id"]) if c.state == "running"], timeout=60
    )[0]
    assert [c.state for c in _children(stack, slow["id"])].count("queued") == 3
    one = stack.api.post(f"/api/v1/jobs/{first.id}/cancel", headers=stack.headers("user"))
    assert one.status_code == 200 and one.json()["parent_id"] == slow["id"]
    second = eventually(
        lambda: [c for c in _children(stack, slow["id"]) if c.state == "running"], timeout=60
    )[0]
    assert second.id != first.id  # the next child was released when the first ended
    cancelled = stack.api.post(f"/api/v1/jobs/{slow['id']}/cancel", headers=stack.headers("user"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    eventually(lambda: all(c.state == "cancelled" for c in _children(stack, slow["id"])))
    assert stack.job(slow["id"])["state"] == "cancelled"


def test_best_by_a_metric_sorts_by_its_last_value(stack: Stack) -> None:
    # Each child reports `loss` at steps 0 and 1; the last (step 1) is what counts:
    # 1/x, so the child with the largest x is lowest, while its step-0 value (x) is highest.
    lines = (
        'echo \'{"name": "loss", "value": {{x}}, "step": 0}\' >> "$SUBMITTER_METRICS"; '
        'echo \'{"name": "loss", "value": \'$(awk "BEGIN {print 1/{{x}}}")\', "step": 1}\' '
        '>> "$SUBMITTER_METRICS"'
    )
    sweep = _sweep(stack, kind="command", spec={"command": lines}, matrix={"x": [1, 2, 4]})
    done = stack.wait(sweep["id"], timeout=120)
    assert done["state"] == "succeeded", (done, [c.error for c in _children(stack, sweep["id"])])
    url = f"/api/v1/jobs/{sweep['id']}/sweep"
    table = stack.api.get(url, params={"best_by": "-loss"}, headers=stack.headers("viewer"))
    assert table.status_code == 200, table.text
    body = table.json()
    assert body["metric_columns"] == ["loss"] and "loss" not in body["columns"]
    assert [r["params"]["x"] for r in body["rows"]] == [4, 2, 1]
    assert body["rows"][0]["metrics"]["loss"] == pytest.approx(0.25)
    assert body["best"] == body["rows"][0]["job_id"]
    highest = stack.api.get(url, params={"best_by": "loss"}, headers=stack.headers("viewer"))
    assert [r["params"]["x"] for r in highest.json()["rows"]] == [1, 2, 4]
    unknown = stack.api.get(url, params={"best_by": "-lsos"}, headers=stack.headers("viewer"))
    assert unknown.status_code == 422, unknown.text
    [error] = unknown.json()["detail"]
    assert error["loc"] == ["query", "best_by"]
    assert "'lsos'" in error["msg"] and "loss" in error["msg"]


def test_invalid_sweeps_are_422_naming_the_field(stack: Stack) -> None:
    too_big = _sweep(
        stack,
        422,
        kind="echo",
        spec={"message": "{{a}}{{b}}"},
        matrix={"a": list(range(40)), "b": list(range(30))},
    )
    assert "1200 combinations" in str(too_big) and "at most 1000" in str(too_big)
    unknown = _sweep(stack, 422, kind="echo", spec={"message": "{{nope}}"}, matrix={"a": [1]})
    assert "{{nope}}" in str(unknown)
    bad_child = _sweep(
        stack,
        422,
        kind="echo",
        spec={"message": "m", "sleep_seconds": "{{s}}"},
        matrix={"s": [1, "x"]},
    )
    detail = bad_child["detail"]
    assert detail[0]["loc"][:4] == ["body", "spec", "spec", "sleep_seconds"], detail
    assert "combination 1 (s=x)" in detail[0]["msg"]
    assert _sweep(stack, 422, kind="sweep", spec={}, matrix={"a": [1]})
    assert _sweep(stack, 422, kind="nope", spec={}, matrix={"a": [1]})


def test_train_sweep_over_models(stack: Stack) -> None:
    rows = "".join(f"{i},{(i * 7) % 11},{int(i % 3 == 0)}\n" for i in range(60))
    upload = stack.api.post(
        "/api/v1/datasets",
        files={"file": ("tiny.csv", io.BytesIO(("a,b,label\n" + rows).encode()), "text/csv")},
        data={"name": "sweep-tiny"},
        headers=stack.headers("user"),
    )
    assert upload.status_code in (200, 201), upload.text
    sweep = _sweep(
        stack,
        kind="train",
        spec={
            "dataset": "sweep-tiny",
            "target": "label",
            "model_name": "sweep-{{model}}",
            "models": ["{{model}}"],
            "folds": 2,
        },
        matrix={"model": ["lr", "dt"]},
    )
    done = stack.wait(sweep["id"], timeout=240)
    assert done["state"] == "succeeded", (done, [c.error for c in _children(stack, sweep["id"])])
    metric = stack.job(_children(stack, sweep["id"])[0].id)["result"]["metric"]
    table = stack.api.get(
        f"/api/v1/jobs/{sweep['id']}/sweep",
        params={"best_by": f"cv.{metric}"},
        headers=stack.headers("viewer"),
    ).json()
    assert {r["params"]["model"] for r in table["rows"]} == {"lr", "dt"}
    assert all(f"cv.{metric}" in r["values"] for r in table["rows"])
    assert table["best"] == table["rows"][0]["job_id"]
