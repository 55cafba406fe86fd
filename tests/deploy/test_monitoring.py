"""Monitoring as shipped in deploy/: Prometheus' rules and config pass `promtool`, every metric
the rules and the Grafana dashboard name exists on a live `/metrics` of a real stack, and
`SubmitterNoWorkerOnline` fires in a real Prometheus scraping a real `submitter api` once the
stack's worker stops.

Debian's `prometheus` package (it brings `promtool`) is installed with apt-get when missing
and the tests run as root; only when it cannot be installed do they skip, saying why.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Backend, Process, Stack, eventually, make_backend, make_stack

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "submitter.json"
#: PromQL functions, keywords and the like that the name pattern would otherwise catch.
NOT_METRICS = {"up"}


@dataclass(frozen=True)
class Binaries:
    prometheus: str
    promtool: str


def _install_prometheus() -> str | None:
    """Install Debian's prometheus; None when done, else why it could not be."""
    if os.geteuid() != 0:
        return "prometheus/promtool are missing and the tests do not run as root"
    if shutil.which("apt-get") is None:
        return "prometheus/promtool are missing and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",  # another test (docker.io) may be installing
        "prometheus",
    ]
    output = ""
    for attempt in range(2):
        if attempt:  # stale package lists on a fresh machine
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return None
        output = (done.stdout + done.stderr)[-2000:]
    return f"apt-get install prometheus failed:\n{output}"


@pytest.fixture(scope="module")
def binaries() -> Binaries:
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        why = _install_prometheus()
        if why is not None:
            pytest.skip(why)
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip("the prometheus package is installed but has no prometheus/promtool")
    return Binaries(prometheus, promtool)


def _promtool(binaries: Binaries, *args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    done = subprocess.run(
        [binaries.promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_checks_rules_config_and_rule_unit_tests(binaries: Binaries) -> None:
    assert "SUCCESS: 6 rules found" in _promtool(binaries, "check", "rules", "alerts.yml")
    assert "SUCCESS" in _promtool(binaries, "check", "config", "prometheus.yml")
    # alerts_test.yml: each alert fires on its series after its `for:` and not before.
    assert "SUCCESS" in _promtool(binaries, "test", "rules", "alerts_test.yml")


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by `(` (functions) and
    not inside `by (...)`/`without (...)`/`on (...)` label lists or `{...}` matchers."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    keywords = {"and", "or", "unless", "bool", "offset", "le", "inf", "nan"}
    return {n for n in names if not n.isdigit() and n.lower() not in keywords}


def test_rules_and_dashboard_are_complete_and_well_formed() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    for name in (
        "SubmitterNoWorkerOnline",
        "SubmitterBeatTaskLate",
        "SubmitterQueueGrowing",
        "SubmitterJobFailureRate",
        "SubmitterApi5xxRate",
    ):
        rule = rules[name]
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    assert variables["datasource"]["current"]["value"] == provisioned["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "submitter.yaml").read_text()
    )["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:7500"]
    assert {"SubmitterApiDown"} <= set(rules)
    assert all(_metric_names(e) for e in _dashboard_exprs())


# --- a live stack ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _training_data(rows: int = 120) -> bytes:
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    table = pa.table({"x1": x1, "x2": x2, "label": np.where(x1 - x2 > 0, "yes", "no")})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@dataclass
class Live:
    stack: Stack
    backend: Backend


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """An embedded stack (real worker and beat, a local "cluster" so beat's HPC clean-up runs
    real commands) that has run echo jobs (one failing), a training and predictions."""
    home = tmp_path_factory.mktemp("monitoring")
    with make_backend("embedded", home) as backend:
        backend.env["SUBMITTER_CLUSTERS"] = json.dumps(
            [{"name": "local", "transport": "local", "workdir": str(home / "cluster")}]
        )
        with make_stack(backend) as stack:
            jobs = [stack.submit(spec={"message": f"m{i}"}) for i in range(3)]
            jobs.append(stack.submit(spec={"message": "boom", "fail": True}))
            upload = stack.api.post(
                "/api/v1/datasets",
                data={"name": "monitoring"},
                files={"file": ("data.parquet", _training_data())},
                headers=stack.headers("user"),
            )
            assert upload.status_code == 201, upload.text
            spec = {
                "dataset": "monitoring",
                "target": "label",
                "model_name": "monitoring",
                "models": ["lr"],
                "folds": 2,
            }
            jobs.append(stack.submit("train", spec=spec))
            states = [stack.wait(job["id"], timeout=120)["state"] for job in jobs]
            assert states == ["succeeded"] * 3 + ["failed", "succeeded"], states
            for _ in range(2):
                predicted = stack.api.post(
                    "/api/v1/models/monitoring/predict",
                    json={"rows": [{"x1": 1.0, "x2": 0.0}]},
                    headers=stack.headers("viewer"),
                )
                assert predicted.status_code == 200, predicted.text
            yield Live(stack, backend)


def _sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_of_the_rules_and_dashboard_is_on_a_live_metrics(live: Live) -> None:
    used = set().union(*(_metric_names(r["expr"]) for r in _rules()))
    used |= set().union(*(_metric_names(e) for e in _dashboard_exprs()))
    used -= NOT_METRICS
    assert all(name.startswith("submitter_") for name in used), used

    # Beat's clean-up writes its first command count at once; it runs every second here.
    def scraped() -> str | None:
        text = live.stack.api.get("/metrics").text
        return text if "submitter_hpc_commands_total{" in text else None

    text = eventually(scraped, timeout=30)
    missing = used - _sample_names(text)
    assert not missing, f"named in deploy/ but not on /metrics: {sorted(missing)}\n{text}"
    # And they carry what the stack did.
    assert re.search(
        r'^submitter_job_run_seconds_count\{kind="train",state="succeeded"\} 1\.0$', text, re.M
    ), text
    assert 'submitter_jobs_finished_total{kind="echo",state="failed"} 1.0' in text
    assert 'submitter_prediction_duration_seconds_count{model="monitoring"} 2.0' in text
    assert 'submitter_hpc_jobs{cluster="local",phase="running"} 0.0' in text
    assert re.search(
        r'^submitter_hpc_commands_total\{cluster="local",command="find",task="hpc_cleanup"\}',
        text,
        re.M,
    ), text


def _test_rules(path: Path) -> None:
    """The shipped rules with every `for:` at 1 s, so the test waits seconds, not minutes."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules))


def _test_config(path: Path, api_port: int, rules: Path) -> None:
    """The shipped scrape config (job name, path) pointed at the test API, every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    path.write_text(yaml.safe_dump(config))


class Prometheus:
    """A private Prometheus process (own port, own storage) stopped at the end."""

    def __init__(self, binary: str, config: Path, data: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def get(self, path: str, **params: str) -> Any:
        try:
            response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return response.json()["data"]

    def alert_state(self, name: str) -> str | None:
        data = self.get("/api/v1/alerts")
        if data is None:
            return None
        states = [a["state"] for a in data["alerts"] if a["labels"]["alertname"] == name]
        return states[0] if states else "inactive"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def test_no_worker_online_fires_in_a_real_prometheus(
    live: Live, binaries: Binaries, tmp_path: Path
) -> None:
    stack = live.stack
    api_port = _free_port()
    api = Process(live.backend, "api", "--port", str(api_port), name="api")
    stack.processes.append(api)  # stopped with the stack, whatever happens here
    rules, config = tmp_path / "alerts.yml", tmp_path / "prometheus.yml"
    _test_rules(rules)
    _test_config(config, api_port, rules)
    prometheus = Prometheus(binaries.prometheus, config, tmp_path / "data", tmp_path / "prom.log")

    def logs() -> str:
        parts = [f"--- prometheus\n{prometheus.tail()}"]
        parts += [f"--- {p.name}\n{p.tail()}" for p in stack.processes]
        return "\n\n".join(parts)

    def online() -> float | None:
        result = prometheus.get("/api/v1/query", query='max(submitter_workers{state="online"})')
        return float(result["result"][0]["value"][1]) if result and result["result"] else None

    try:
        # Scraped, rules evaluated, a worker online: the alert is quiet.
        eventually(lambda: online() == 1.0, timeout=60, every=0.5)
        time.sleep(2.5)  # two more evaluations with a worker online
        assert prometheus.alert_state("SubmitterNoWorkerOnline") == "inactive", logs()
        # Every dashboard query is valid PromQL to a real Prometheus.
        for expr in _dashboard_exprs():
            assert prometheus.get("/api/v1/query", query=expr) is not None, expr

        worker = next(p for p in stack.processes if p.name == "worker")
        worker.stop()
        deadline = time.monotonic() + 60
        state = prometheus.alert_state("SubmitterNoWorkerOnline")
        while state != "firing":
            assert time.monotonic() < deadline, f"alert {state} after 60 s\n{logs()}"
            time.sleep(0.5)
            state = prometheus.alert_state("SubmitterNoWorkerOnline")
        firing = [
            a
            for a in prometheus.get("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "SubmitterNoWorkerOnline"
        ]
        assert firing[0]["labels"]["severity"] == "critical"
        assert firing[0]["annotations"]["summary"] == "No Submitter worker is online"
        assert online() == 0.0
    except AssertionError:
        print(logs())
        raise
    finally:
        prometheus.stop()
