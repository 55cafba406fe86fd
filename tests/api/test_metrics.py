"""The metrics `/metrics` adds for dashboards, against jobs and counts whose values are known:
the cursor that observes each job once, job run time and queue wait, HPC jobs by cluster and
phase, beat's HPC command totals, prediction latency by model."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from submitter.api.metrics import JobTimings, NewRows, PlatformCollector
from submitter.config import load_settings
from submitter.db.migrate import upgrade
from submitter.db.models import Job, JobDependency
from submitter.db.types import utcnow
from submitter.hpc.clusters import ClusterConfig
from submitter.runtime import Runtime
from submitter.worker.beat_status import BeatStatus
from tests.conftest import make_backend, make_stack
from tests.services import postgres_database

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=utcnow().tzinfo)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _rows(*items: tuple[str, float]) -> list[tuple[str, datetime, str]]:
    return [(key, _at(seconds), key) for key, seconds in items]


# --- the cursor (pure) -------------------------------------------------------------------


def test_each_row_once_over_overlapping_looks() -> None:
    cursor: NewRows[str, str] = NewRows(since=_at(0), margin=timedelta(seconds=5))
    assert cursor.take(_rows(("a", 1), ("b", 2)), looked_at=_at(3)) == ["a", "b"]
    # The next look reads from 3 - 5 s (the floor, 0 s, here): a and b again, not counted.
    assert cursor.start == _at(0)
    assert cursor.take(_rows(("a", 1), ("b", 2), ("c", 4)), looked_at=_at(10)) == ["c"]
    assert cursor.start == _at(5)
    assert cursor.remembered == 0  # a, b, c are before the start: the query cannot return them


def test_a_late_commit_inside_the_margin_is_counted_once_outside_it_never() -> None:
    cursor: NewRows[str, str] = NewRows(since=_at(0), margin=timedelta(seconds=5))
    assert cursor.take(_rows(("a", 9)), looked_at=_at(10)) == ["a"]
    # "b" finished at 7 s but committed after the look at 10 s: the next look still sees it.
    assert cursor.take(_rows(("a", 9), ("b", 7)), looked_at=_at(11)) == ["b"]
    assert cursor.take(_rows(("a", 9), ("b", 7)), looked_at=_at(12)) == []
    # "c" finished at 4 s and committed after 12 s: past the margin, so it is lost (and
    # documented as such), never counted late.
    assert cursor.take(_rows(("c", 4)), looked_at=_at(13)) == []


def test_nothing_before_the_start_of_the_process() -> None:
    cursor: NewRows[str, str] = NewRows(since=_at(100), margin=timedelta(seconds=30))
    assert cursor.take(_rows(("old", 99), ("new", 101)), looked_at=_at(102)) == ["new"]
    assert cursor.start == _at(100)  # 102 - 30 s is before the floor


def test_memory_is_the_margin_not_the_history() -> None:
    cursor: NewRows[str, str] = NewRows(since=_at(0), margin=timedelta(seconds=2))
    for second in range(1, 1000):
        fresh = cursor.take(
            _rows((f"j{second}", second), (f"j{second - 1}", second - 1)), _at(second)
        )
        assert fresh == [f"j{second}"]
        assert cursor.remembered <= 3


def test_a_failed_look_keeps_the_start() -> None:
    """A look whose query failed never calls take(): the start stays, nothing is skipped."""
    cursor: NewRows[str, str] = NewRows(since=_at(0), margin=timedelta(seconds=1))
    cursor.take(_rows(("a", 1)), looked_at=_at(2))
    start = cursor.start
    # ...database away for an hour...
    assert cursor.start == start
    assert cursor.take(_rows(("a", 1), ("b", 1800)), looked_at=_at(3600)) == ["b"]


# --- values against known jobs -----------------------------------------------------------


def _samples(*collectors: Collector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A migrated database of each kind (the queries use JSON and a correlated subquery)."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'submitter.db'}"
        else:
            url = stack.enter_context(postgres_database())
        cluster = ClusterConfig(name="c1", transport="local", workdir=str(tmp_path / "hpc"))
        settings = load_settings(home=tmp_path, database_url=url, clusters=[cluster])
        upgrade(settings)
        made = Runtime(settings)
        stack.callback(made.close)
        yield made


def _job(
    kind: str = "echo",
    state: str = "succeeded",
    *,
    created: datetime,
    started: datetime | None = None,
    finished: datetime | None = None,
    attempts: int = 1,
    phase: str | None = None,
    spec: dict[str, Any] | None = None,
) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        kind=kind,
        queue="default",
        state=state,
        phase=phase,
        spec=spec or {},
        owner="test",
        attempts=attempts,
        max_attempts=3,
        created_at=created,
        enqueued_at=created,
        started_at=started,
        finished_at=finished,
    )


def test_run_time_queue_wait_and_finished_jobs_each_observed_once(runtime: Runtime) -> None:
    now = utcnow()
    since = now - timedelta(seconds=120)

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    succeeded = _job(created=ago(100), started=ago(98), finished=ago(88))  # wait 2, run 10
    failed = _job(state="failed", created=ago(100), started=ago(99.5), finished=ago(99))
    never_ran = _job(state="cancelled", created=ago(100), finished=ago(95))
    # Waited on `succeeded` (ended 88 s ago) and started 1 s after it: a wait of 1, not 13.
    dependent = _job(state="running", created=ago(101), started=ago(87))
    retried = _job(state="running", created=ago(100), started=ago(50), attempts=2)
    before_start = _job(created=ago(200), started=ago(190), finished=ago(180))
    with runtime.transaction() as session:
        session.add_all([succeeded, failed, never_ran, dependent, retried, before_start])
        session.flush()
        session.add(JobDependency(job_id=dependent.id, depends_on_id=succeeded.id))
    timings = JobTimings(runtime, since=since)

    first = _samples(timings)
    for _ in range(3):  # scrape again: nothing is observed twice
        again = _samples(timings)
    assert again == first
    run = "submitter_job_run_seconds"
    assert _value(first, f"{run}_count", kind="echo", state="succeeded") == 1
    assert _value(first, f"{run}_sum", kind="echo", state="succeeded") == pytest.approx(
        10, abs=1e-3
    )
    assert _value(first, f"{run}_bucket", kind="echo", state="succeeded", le="5.0") == 0
    assert _value(first, f"{run}_bucket", kind="echo", state="succeeded", le="10.0") == 1
    assert _value(first, f"{run}_sum", kind="echo", state="failed") == pytest.approx(0.5, abs=1e-3)
    assert _value(first, f"{run}_count", kind="echo", state="cancelled") is None  # never ran
    wait = "submitter_job_queue_wait_seconds"
    # succeeded (2), failed (0.5), dependent (1); not the re-run, not the one before start
    assert _value(first, f"{wait}_count", kind="echo") == 3
    assert _value(first, f"{wait}_sum", kind="echo") == pytest.approx(3.5, abs=1e-3)
    assert _value(first, f"{wait}_bucket", kind="echo", le="0.5") == 1
    assert _value(first, f"{wait}_count", kind="train") == 0  # every kind, from the start
    finished = "submitter_jobs_finished_total"
    for state in ("succeeded", "failed", "cancelled"):
        assert _value(first, finished, kind="echo", state=state) == 1, state
    assert _value(first, finished, kind="slurm", state="failed") == 0

    # Committed now with an end 10 s ago, before the last scrape: inside the margin, counted.
    late = _job(created=ago(20), started=ago(15), finished=ago(10))
    with runtime.transaction() as session:
        session.add(late)
    later = _samples(timings)
    assert _value(later, f"{run}_count", kind="echo", state="succeeded") == 2
    assert _value(later, f"{run}_sum", kind="echo", state="succeeded") == pytest.approx(
        15, abs=1e-3
    )
    assert _value(later, f"{wait}_count", kind="echo") == 4
    assert _samples(timings) == later


def test_hpc_jobs_by_cluster_and_phase_and_beat_command_totals(runtime: Runtime) -> None:
    now = utcnow()

    def slurm(state: str, phase: str | None, cluster: str = "c1") -> Job:
        return _job("slurm", state, created=now, phase=phase, spec={"cluster": cluster})

    with runtime.transaction() as session:
        session.add_all(
            [
                slurm("running", "pending"),
                slurm("running", "pending"),
                slurm("running", "running"),
                slurm("queued", None),
                slurm("succeeded", None),  # ended: not active
                slurm("running", "collecting", cluster="gone"),  # no longer configured
            ]
        )
    status = BeatStatus(runtime)
    status.record("hpc_monitor", 30, now, 0.1, None, {("c1", "squeue"): 2, ("c1", "sacct"): 1})
    status.record("hpc_cleanup", 600, now, 0.1, None, {("c1", "find"): 1})
    platform = PlatformCollector(runtime)

    samples = _samples(platform)
    jobs = "submitter_hpc_jobs"
    assert _value(samples, jobs, cluster="c1", phase="pending") == 2
    assert _value(samples, jobs, cluster="c1", phase="running") == 1
    assert _value(samples, jobs, cluster="c1", phase="queued") == 1
    assert _value(samples, jobs, cluster="c1", phase="submitted") == 0  # shown at 0
    assert _value(samples, jobs, cluster="gone", phase="collecting") == 1
    commands = "submitter_hpc_commands_total"
    assert _value(samples, commands, task="hpc_monitor", cluster="c1", command="squeue") == 2
    assert _value(samples, commands, task="hpc_cleanup", cluster="c1", command="find") == 1
    assert _value(samples, "submitter_beat_task_interval_seconds", task="hpc_monitor") == 30

    # Within the coalescing period: counted by beat, not yet written; a failure writes at once.
    status.record("hpc_monitor", 30, now, 0.1, None, {("c1", "squeue"): 3})
    samples = _samples(platform)
    assert _value(samples, commands, task="hpc_monitor", cluster="c1", command="squeue") == 2
    status.record("hpc_monitor", 30, now, 0.1, "ClusterError: down", {("c1", "squeue"): 1})
    samples = _samples(platform)
    assert _value(samples, commands, task="hpc_monitor", cluster="c1", command="squeue") == 6
    assert _value(samples, commands, task="hpc_monitor", cluster="c1", command="sacct") == 1
    # Another beat (a restart) adds to the same totals: the counter never goes back.
    BeatStatus(runtime).record("hpc_monitor", 30, now, 0.1, None, {("c1", "squeue"): 4})
    samples = _samples(platform)
    assert _value(samples, commands, task="hpc_monitor", cluster="c1", command="squeue") == 10


# --- prediction latency ------------------------------------------------------------------


def _register_model(runtime: Runtime, name: str, tmp_path: Path) -> None:
    """A real fitted pipeline registered like the train job does, without a worker."""
    from submitter.ml import save, train
    from submitter.registry.service import register_version

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.normal(size=120)})
    frame["label"] = np.where(frame["x"] + frame["y"] > 0, "yes", "no")
    result = train(frame, "label", models=["lr"], folds=2, n_jobs=1)
    model_file = tmp_path / "model.skops"
    save(result.pipeline, model_file)
    register_version(
        runtime,
        name=name,
        model_file=model_file,
        fields={
            "task": result.task,
            "algorithm": result.best_model,
            "metric": result.metric,
            "metrics": {},
            "leaderboard": [],
            "params": {},
            "feature_schema": result.feature_schema,
            "classes": result.classes,
            "target": "label",
        },
    )


def test_prediction_latency_by_model(tmp_path: Path) -> None:
    with (
        make_backend("embedded", tmp_path) as backend,
        make_stack(backend, worker=False, beat=False) as stack,
    ):
        name = f"m-{secrets.token_hex(3)}"
        _register_model(stack.runtime, name, tmp_path)
        body = {"rows": [{"x": 0.5, "y": 1.0}, {"x": -2.0, "y": 0.1}]}
        for _ in range(3):
            response = stack.api.post(
                f"/api/v1/models/{name}/predict", json=body, headers=stack.headers("viewer")
            )
            assert response.status_code == 200, response.text
        unknown = stack.api.post(
            "/api/v1/models/no-such-model/predict", json=body, headers=stack.headers("viewer")
        )
        assert unknown.status_code == 404
        bad = stack.api.post(
            f"/api/v1/models/{name}/predict",
            json={"rows": [{"x": 1}]},
            headers=stack.headers("viewer"),
        )
        assert bad.status_code == 422
        text = stack.api.get("/metrics").text
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        latency = "submitter_prediction_duration_seconds"
        assert _value(samples, f"{latency}_count", model=name) == 3  # successes only
        total = _value(samples, f"{latency}_sum", model=name)
        assert total is not None and 0 < total < 30
        assert not any(
            n.startswith(latency) and dict(labels).get("model") == "no-such-model"
            for n, labels in samples
        )
