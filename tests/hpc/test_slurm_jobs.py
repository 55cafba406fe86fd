"""`slurm` jobs end to end: real SLURM (tests/hpc_cluster.py), real sshd, real worker and
beat processes, PostgreSQL + Redis and an S3 server for staging (the scaled-out setup).

The cluster is one node with the machine's CPUs; tests that need a job to stay PENDING fill
the node with a blocker job first.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from submitter.db.models import Job
from submitter.hpc.accounting import AccountingLookup
from submitter.hpc.clusters import find_cluster
from submitter.hpc.monitor import Monitor
from submitter.hpc.pool import ClusterPool
from submitter.hpc.slurm import accounting_from_fields
from tests.conftest import Stack, eventually, make_backend, make_stack
from tests.hpc_cluster import TestCluster

PASSPHRASE_ENV = "HPC_TEST_KEY_PASSPHRASE"
SLOW = 240  # seconds a SLURM job may take from submit to succeeded on a loaded machine


@pytest.fixture(scope="module")
def hpc(slurm_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    clusters = [
        slurm_cluster.config("test"),
        slurm_cluster.config("nosacct", accounting="scontrol"),
        slurm_cluster.config("here", transport="local", keep_job_folders="always"),
        slurm_cluster.config("impostor", known_hosts=str(slurm_cluster.wrong_known_hosts)),
        slurm_cluster.config("stranger", known_hosts=str(slurm_cluster.empty_known_hosts)),
        # Every remote command of this one takes 2 s more: time to cancel while preparing.
        slurm_cluster.config("slow", setup=[*slurm_cluster.setup, "sleep 2"]),
        slurm_cluster.config(
            "locked",
            key_file=str(slurm_cluster.passphrase_key_file),
            passphrase_env=PASSPHRASE_ENV,
        ),
        # At most 3 jobs in SLURM at once; more wait in Submitter, throttled.
        slurm_cluster.config("limited", max_jobs=3),
        # sbatch refuses as for a submit limit while the flag file exists (a shell function
        # in front of the real sbatch: the association limit itself is not configured).
        slurm_cluster.config(
            "refusing", setup=[*slurm_cluster.setup, _refusing_sbatch(slurm_cluster)]
        ),
        slurm_cluster.config(
            "locked-out",
            key_file=str(slurm_cluster.passphrase_key_file),
            passphrase_env="HPC_TEST_UNSET_PASSPHRASE",
        ),
    ]
    home = tmp_path_factory.mktemp("hpc")
    # Worker and beat inherit this process's environment (but its SUBMITTER_* variables).
    os.environ[PASSPHRASE_ENV] = slurm_cluster.passphrase
    try:
        with make_backend("postgres-redis", home) as backend:
            backend.env["SUBMITTER_CLUSTERS"] = json.dumps(clusters)
            with make_stack(backend) as stack:
                yield stack
    finally:
        del os.environ[PASSPHRASE_ENV]


def _refuse_flag(cluster: TestCluster) -> Path:
    return Path(cluster.workdir) / "refuse-sbatch"


def _refusing_sbatch(cluster: TestCluster) -> str:
    flag = shlex.quote(str(_refuse_flag(cluster)))
    return (
        f"sbatch() {{ if [ -e {flag} ]; then "
        'echo "sbatch: error: AssocMaxSubmitJobLimit" >&2; '
        'echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS '
        "policy (job submit limit, user's size and/or time limits)\" >&2; return 1; fi; "
        'command sbatch "$@"; }'
    )


def _slurm_job(stack: Stack, expect: int = 202, **spec: Any) -> dict[str, Any]:
    depends_on = spec.pop("depends_on", None)
    body: dict[str, Any] = {"kind": "slurm", "spec": {"cluster": "test", **spec}}
    if depends_on:
        body["depends_on"] = depends_on
    response = stack.api.post("/api/v1/jobs", json=body, headers=stack.headers("user"))
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


def _ssh(cluster: TestCluster, command: str) -> str:
    done = subprocess.run(
        cluster.ssh_argv(command), capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout + done.stderr


def _artifact(stack: Stack, job_id: str, name: str) -> bytes:
    response = stack.api.get(
        f"/api/v1/jobs/{job_id}/artifacts/{name}", headers=stack.headers("viewer")
    )
    assert response.status_code == 200, response.text
    return response.content


def _artifact_names(stack: Stack, job_id: str) -> list[str]:
    response = stack.api.get(f"/api/v1/jobs/{job_id}/artifacts", headers=stack.headers("viewer"))
    return sorted(item["name"] for item in response.json()["items"])


def test_clusters_are_listed_without_secrets_and_checked(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    response = hpc.api.get("/api/v1/clusters", headers=hpc.headers("viewer"))
    assert response.status_code == 200
    listed = {c["name"]: c for c in response.json()["items"]}
    assert set(listed) == {
        *("test", "nosacct", "here", "impostor", "stranger", "slow", "locked", "locked-out"),
        *("limited", "refusing"),
    }
    text = response.text
    assert str(slurm_cluster.key_file) not in text and "passphrase" not in text
    assert listed["test"]["host"] == "127.0.0.1" and listed["here"]["transport"] == "local"

    response = hpc.api.post("/api/v1/clusters/test/check", headers=hpc.headers("admin"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["slurm_version"].startswith("slurm")
    assert [p["name"] for p in report["partitions"]] == ["debug"]
    assert report["partitions"][0]["default"] is True
    assert "python" in (report["python"] or "").lower() or "/" in report["python"]
    assert report["workdir"] == slurm_cluster.workdir

    assert (
        hpc.api.post("/api/v1/clusters/test/check", headers=hpc.headers("user")).status_code == 403
    )
    missing = hpc.api.post("/api/v1/clusters/nope/check", headers=hpc.headers("admin"))
    assert missing.status_code == 404 and "known clusters" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("cluster", "words"),
    [("impostor", "does not match"), ("stranger", "is not in")],
)
def test_unknown_or_changed_host_keys_are_refused(hpc: Stack, cluster: str, words: str) -> None:
    response = hpc.api.post(f"/api/v1/clusters/{cluster}/check", headers=hpc.headers("admin"))
    assert response.status_code == 502 and words in response.json()["detail"]
    job = _slurm_job(hpc, cluster=cluster, command="echo never")
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "failed" and done["external_id"] is None
    assert words in done["error"] and "HostKeyRefused" in done["error"]


def test_dataset_in_venv_python_out_with_accounting(hpc: Stack, slurm_cluster: TestCluster) -> None:
    csv = "amount,group\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(1, 101))
    upload = hpc.api.post(
        "/api/v1/datasets",
        files={"file": ("amounts.csv", io.BytesIO(csv.encode()), "text/csv")},
        data={"name": "hpc-amounts"},
        headers=hpc.headers("user"),
    )
    assert upload.status_code in (200, 201), upload.text
    analysis = (
        "import csv, json, os, sys\n"
        "rows = list(csv.DictReader(open('data/amounts.csv')))\n"
        "os.makedirs('out', exist_ok=True)\n"
        "summary = {'rows': len(rows), 'total': sum(int(r['amount']) for r in rows),\n"
        "           'python': sys.prefix, 'module': os.environ.get('SUBMITTER_TEST_MODULE'),\n"
        "           'greeting': os.environ['GREETING']}\n"
        "json.dump(summary, open('out/summary.json', 'w'))\n"
        "open('out/ignored.tmp', 'w').write('not collected')\n"
        "print('analysed', len(rows), 'rows')\n"
        "import submitter_metrics  # on PYTHONPATH in every job, not in the venv\n"
        "for step in range(3): submitter_metrics.log('seen', (step + 1) * len(rows), step)\n"
        "# Hold 60 MB past one accounting sample (JobAcctGatherFrequency=5): a real MaxRSS.\n"
        "import time; block = bytearray(60_000_000); time.sleep(6)\n"
    )
    job = _slurm_job(
        hpc,
        name="analysis",
        script="#!/bin/bash\nset -e\ntestenv-hello\npython analysis.py\necho to-stderr >&2\n"
        'echo \'{"name": "shell", "value": 1}\' >> "$SUBMITTER_METRICS"\n',
        resources={"cpus_per_task": 1, "mem": "200M", "time": "10"},
        environment={
            "modules": [slurm_cluster.module_name],
            "venv": {"name": "analysis", "packages": [], "system_site_packages": False},
        },
        files={
            "provide": [
                {"source": "dataset:hpc-amounts", "target": "data/amounts.csv"},
                {"source": f"inline:{analysis}", "target": "analysis.py"},
            ],
            "collect": ["out/*.json"],
        },
        env={"GREETING": "hello 'world' $(x)"},
    )
    phases = set()
    deadline = time.monotonic() + SLOW
    while time.monotonic() < deadline:
        current = hpc.job(job["id"])
        phases.add(current["phase"])
        if current["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert current["state"] == "succeeded", (current, hpc.logs(job["id"]))
    assert phases & {"submitted", "pending", "running"}, phases
    slurm_id = current["external_id"]
    assert slurm_id and slurm_id.isdigit()

    summary = json.loads(_artifact(hpc, job["id"], "out/summary.json"))
    assert summary["rows"] == 100 and summary["total"] == 5050
    assert summary["python"].startswith(f"{slurm_cluster.workdir}/submitter/venvs/analysis-")
    assert summary["module"] == "testenv-1.0"
    assert summary["greeting"] == "hello 'world' $(x)"
    names = _artifact_names(hpc, job["id"])
    assert "out/summary.json" in names and "out/ignored.tmp" not in names
    assert f"slurm-{slurm_id}.out" in names and f"slurm-{slurm_id}.err" in names
    out = _artifact(hpc, job["id"], f"slurm-{slurm_id}.out").decode()
    assert "hello from testenv" in out and "analysed 100 rows" in out
    log = "\n".join(hpc.logs(job["id"]))
    assert "analysed 100 rows" in log and "to-stderr" in log
    assert f"SLURM job {slurm_id}" in log and "venv analysis created" in log

    # The metrics file is collected with the outputs.
    assert current["result"]["metrics"] == 4
    metrics = hpc.api.get(f"/api/v1/jobs/{job['id']}/metrics", headers=hpc.headers("viewer"))
    assert [(m["name"], m["step"], m["value"]) for m in metrics.json()["items"]] == [
        ("seen", 0, 100.0),
        ("seen", 1, 200.0),
        ("seen", 2, 300.0),
        ("shell", 0, 1.0),
    ]

    accounting = current["result"]["slurm"]
    assert accounting["state"] == "COMPLETED" and accounting["exit_code"] == 0
    assert accounting["elapsed_seconds"] is not None and accounting["nodes"] == 1
    assert accounting["allocated_cpus"] >= 1 and accounting["cpu_seconds"] is not None
    assert accounting["requested_memory_bytes"] == 200 << 20, json.dumps(accounting)
    assert accounting["source"] == ("sacct" if slurm_cluster.accounting else "scontrol")
    if slurm_cluster.accounting:
        assert accounting["max_rss_bytes"] > 50_000_000, json.dumps(accounting)
        assert 0.25 < accounting["memory_efficiency"] < 1, json.dumps(accounting)

    # The same venv is reused by the next job, not built again.
    again = _slurm_job(
        hpc,
        command="python -c 'import sys; print(sys.prefix)'",
        environment={
            "modules": [slurm_cluster.module_name],
            "venv": {"name": "analysis", "packages": [], "system_site_packages": False},
        },
    )
    assert hpc.wait(again["id"], timeout=SLOW)["state"] == "succeeded"
    assert any("venv analysis reused" in line for line in hpc.logs(again["id"]))


def test_failing_script_fails_with_its_exit_code_and_accounting(hpc: Stack) -> None:
    job = _slurm_job(hpc, cluster="nosacct", command="echo about to fail >&2; exit 3")
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "failed", done
    assert "exited with code 3" in done["error"]
    assert done["result"]["slurm"]["exit_code"] == 3
    assert done["result"]["slurm"]["source"] in ("scontrol", "jobcomp")
    assert done["result"]["slurm"]["cpu_seconds"] is not None  # from the wrapper's `times`
    assert any("about to fail" in line for line in hpc.logs(job["id"]))


def test_folders_of_ended_jobs_go_as_the_cluster_says(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    # Cluster `test` keeps the default `keep_job_folders: failed`.
    ok = _slurm_job(hpc, command="echo fine > out.txt", files={"collect": ["out.txt"]})
    bad = _slurm_job(hpc, command="echo broken > out.txt; exit 4")
    assert hpc.wait(ok["id"], timeout=SLOW)["state"] == "succeeded"
    assert hpc.wait(bad["id"], timeout=SLOW)["state"] == "failed"

    def present(job_id: str) -> bool:
        folder = shlex.quote(f"{slurm_cluster.workdir}/submitter/{job_id}")
        return _ssh(slurm_cluster, f"test -d {folder} && echo yes || echo no").strip() == "yes"

    eventually(lambda: not present(ok["id"]), timeout=60)  # beat's hpc_cleanup, every 1 s here
    assert _artifact(hpc, ok["id"], "out.txt") == b"fine\n"  # the outputs are in the store
    assert present(bad["id"])  # kept for debugging: that job failed


def test_local_transport_runs_on_this_host(hpc: Stack, slurm_cluster: TestCluster) -> None:
    job = _slurm_job(
        hpc,
        cluster="here",
        # A symlink out of the job folder is never collected (the job runs as root here).
        command="mkdir -p res && echo local > res/where.txt && ln -s /etc/shadow res/shadow",
        files={"collect": ["res/*"]},
    )
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "succeeded", (done, hpc.logs(job["id"]))
    assert _artifact(hpc, job["id"], "res/where.txt") == b"local\n"
    assert "res/shadow" not in _artifact_names(hpc, job["id"])
    assert Path(slurm_cluster.local_workdir, "submitter", job["id"], "res/where.txt").is_file()


def test_passphrase_protected_key(hpc: Stack) -> None:
    job = _slurm_job(hpc, cluster="locked", command="echo unlocked")
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "succeeded", (done, hpc.logs(job["id"]))
    # Without its variable: a clear failure naming the variable.
    job = _slurm_job(hpc, cluster="locked-out", command="true")
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "failed" and "HPC_TEST_UNSET_PASSPHRASE" in done["error"]


def test_dependency_gets_the_artifact_of_the_job_it_waited_for(hpc: Stack) -> None:
    first = _slurm_job(
        hpc, command="mkdir -p o && echo 41 > o/n.txt", files={"collect": ["o/n.txt"]}
    )
    second = _slurm_job(
        hpc,
        command="echo $(( $(cat in.txt) + 1 )) > answer.txt",
        files={
            "provide": [{"source": f"artifact:{first['id']}/o/n.txt", "target": "in.txt"}],
            "collect": ["answer.txt"],
        },
        depends_on=[first["id"]],
    )
    assert second["phase"] == "waiting"
    done = hpc.wait(second["id"], timeout=2 * SLOW)
    assert done["state"] == "succeeded", (done, hpc.logs(second["id"]))
    assert _artifact(hpc, second["id"], "answer.txt") == b"42\n"
    first_done = hpc.job(first["id"])
    assert first_done["finished_at"] <= done["started_at"]


def _fill_node(hpc: Stack, slurm_cluster: TestCluster) -> dict[str, Any]:
    blocker = _slurm_job(
        hpc,
        name="blocker",
        command="sleep 300",
        resources={"cpus_per_task": slurm_cluster.cpus},
    )
    hpc.wait(blocker["id"], until=lambda j: j["phase"] == "running", timeout=SLOW)
    return blocker


def _slurm_state(slurm_cluster: TestCluster, slurm_id: str) -> str:
    return _ssh(slurm_cluster, f"scontrol -o show job {shlex.quote(slurm_id)}")


def test_cancel_while_pending_and_while_running(hpc: Stack, slurm_cluster: TestCluster) -> None:
    blocker = _fill_node(hpc, slurm_cluster)
    waiting = _slurm_job(hpc, command="echo never runs", resources={"cpus_per_task": 1})
    hpc.wait(waiting["id"], until=lambda j: j["phase"] == "pending", timeout=SLOW)
    # SLURM's reason (squeue %r) is the job's message while it is pending.
    reason = hpc.wait(
        waiting["id"], until=lambda j: (j["message"] or "").startswith("pending in SLURM: ")
    )["message"]
    assert reason.removeprefix("pending in SLURM: ") in ("Resources", "Priority"), reason

    for job, slurm_phase in ((waiting, "PENDING"), (blocker, "RUNNING")):
        slurm_id = hpc.job(job["id"])["external_id"]
        assert f"JobState={slurm_phase}" in _slurm_state(slurm_cluster, slurm_id)
        response = hpc.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=hpc.headers("user"))
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
        deadline = time.monotonic() + 60
        while "JobState=CANCELLED" not in _slurm_state(slurm_cluster, slurm_id):
            assert time.monotonic() < deadline, _slurm_state(slurm_cluster, slurm_id)
            time.sleep(0.5)
        assert any(f"scancel {slurm_id}" in line for line in hpc.logs(job["id"]))
        assert hpc.job(job["id"])["state"] == "cancelled"


def test_cancel_while_preparing_never_reaches_sbatch(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    name = "never-submitted"
    job = _slurm_job(
        hpc,
        cluster="slow",
        name=name,
        command="echo should not run",
        environment={
            "modules": [slurm_cluster.module_name],
            "venv": {"name": "slowenv", "system_site_packages": True},
        },
    )
    hpc.wait(job["id"], until=lambda j: j["phase"] == "preparing", timeout=SLOW)
    response = hpc.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=hpc.headers("user"))
    assert response.status_code == 200, response.text
    # The worker stops at its next check before sbatch, or is killed after the cancel grace
    # period if an SSH command holds it longer; either way sbatch never runs. Give it the
    # time it would have needed to get there (each remote command takes 2 s here).
    time.sleep(12)
    done = hpc.job(job["id"])
    assert done["state"] == "cancelled" and done["external_id"] is None
    listed = _ssh(slurm_cluster, "squeue --me --states=all --noheader --format=%j")
    assert name not in listed
    if slurm_cluster.accounting:
        assert name not in _ssh(slurm_cluster, f"sacct -n -X --name={name} --format=JobName")


def test_time_limit_overrun_fails_with_timeout(hpc: Stack) -> None:
    job = _slurm_job(hpc, command="sleep 600", resources={"time": "1"})
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "failed" and "TIMEOUT" in done["error"], done
    assert done["result"]["slurm"]["state"] == "TIMEOUT"


def test_monitor_polls_all_jobs_with_one_squeue(hpc: Stack, slurm_cluster: TestCluster) -> None:
    jobs = [_slurm_job(hpc, command="sleep 20") for _ in range(6)]
    for job in jobs:
        hpc.wait(job["id"], until=lambda j: j["external_id"] is not None, timeout=SLOW)
    report = Monitor(hpc.runtime).poll()
    poll = report.clusters["test"]
    assert poll.followed >= 6 and poll.error is None
    assert poll.commands.get("squeue") == 1
    assert poll.connections_opened <= 1
    second = Monitor(hpc.runtime).poll().clusters["test"]
    assert second.commands.get("squeue") == 1
    for job in jobs:
        hpc.api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=hpc.headers("user"))


HOSTILE = "; rm -rf ~ $(touch /tmp/submitter-pwned) `id` 'q' \"qq\"\nnext"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"command": "true", "name": HOSTILE}, "name"),
        ({"command": "true", "resources": {"partition": HOSTILE}}, "partition"),
        ({"command": "true", "resources": {"mem": "1G; rm -rf ~"}}, "mem"),
        ({"command": "true", "resources": {"time": "$(reboot)"}}, "time"),
        ({"command": "true", "environment": {"modules": [HOSTILE]}}, "modules"),
        (
            {"command": "true", "environment": {"venv": {"name": HOSTILE}}},
            "name",
        ),
        (
            {"command": "true", "environment": {"venv": {"name": "v", "packages": ["-i x"]}}},
            "packages",
        ),
        ({"command": "true", "env": {"A;B": "x"}}, "env"),
        ({"command": "true", "files": {"collect": ["../*"]}}, "collect"),
        (
            {"command": "true", "files": {"provide": [{"source": "inline:x", "target": "/etc/x"}]}},
            "target",
        ),
        (
            {
                "command": "true",
                "files": {"provide": [{"source": "file:/etc/passwd", "target": "p"}]},
            },
            "source",
        ),
        ({"command": "true", "cluster": "$(id)"}, "cluster"),
        ({"command": "true", "script": "echo both"}, "spec"),
    ],
)
def test_hostile_values_are_refused_with_the_field(
    hpc: Stack, spec: dict[str, Any], field: str
) -> None:
    answer = _slurm_job(hpc, expect=422, **spec)
    locations = [".".join(str(p) for p in e["loc"]) for e in answer["detail"]]
    assert any(field in loc for loc in locations), answer


def test_hostile_values_that_are_allowed_arrive_verbatim(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    sentinel = f"{slurm_cluster.workdir}/pwned"
    odd_target = "odd dir/it's $(touch pwned) `x`.txt"
    payload = f"$(touch {sentinel})\n'; touch {sentinel}; '\n"
    job = _slurm_job(
        hpc,
        command=(
            f'cat {shlex.quote(odd_target)} > echoed.txt; printf %s "$V" > v.txt; '
            "ln -s /etc/passwd passwd.txt"  # a symlink out of the folder: never collected
        ),
        env={"V": payload},
        files={
            "provide": [{"source": f"inline:{payload}", "target": odd_target}],
            "collect": ["*.txt", "odd dir/*"],
        },
    )
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "succeeded", (done, hpc.logs(job["id"]))
    assert _artifact(hpc, job["id"], "echoed.txt").decode() == payload
    assert _artifact(hpc, job["id"], "v.txt").decode() == payload
    assert "passwd.txt" not in _artifact_names(hpc, job["id"])
    # Nothing ran: no file named exactly `pwned` anywhere under the work folder. (find's
    # complaints go: the cleanup may remove another ended job's folder while it walks.)
    found = _ssh(
        slurm_cluster, f"find {shlex.quote(slurm_cluster.workdir)} -name pwned 2>/dev/null"
    )
    assert found.strip() == "", found
    assert _ssh(slurm_cluster, "test -d ~ && echo home-intact").strip() == "home-intact"


def test_jobs_the_controller_forgot_are_found_in_the_jobcomp_log(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    """After MinJobAge scontrol no longer knows a job; jobcomp/filetxt still does."""
    slurm_id = _ssh(slurm_cluster, "sbatch --parsable --wrap 'exit 4'").strip()
    deadline = time.monotonic() + 60
    while "JobState=FAILED" not in _slurm_state(slurm_cluster, slurm_id):
        assert time.monotonic() < deadline, _slurm_state(slurm_cluster, slurm_id)
        time.sleep(0.5)
    cluster = find_cluster(hpc.runtime.settings.clusters, "nosacct")
    pool = ClusterPool()
    try:
        lookup = AccountingLookup(pool)
        deadline = time.monotonic() + 30
        while not (
            found := lookup.jobcomp_records(cluster, [slurm_id])
        ):  # written just after the end
            assert time.monotonic() < deadline
            time.sleep(0.5)
        record = accounting_from_fields(found[slurm_id], source="jobcomp")
        assert (record.state, record.exit_code, record.source) == ("FAILED", 4, "jobcomp")
        assert record.nodes == 1 and record.elapsed_seconds is not None
    finally:
        pool.close()


def test_no_key_material_in_jobs_logs_or_metrics(hpc: Stack, slurm_cluster: TestCluster) -> None:
    """Runs last in this module: every job, log line and metric the tests above produced."""
    secrets = [
        slurm_cluster.passphrase,
        *slurm_cluster.key_file.read_text().splitlines()[1:-1],
        *slurm_cluster.passphrase_key_file.read_text().splitlines()[1:-1],
    ]
    page = hpc.api.get("/api/v1/jobs?limit=500", headers=hpc.headers("admin")).json()
    assert page["total"] >= 10
    texts = [json.dumps(page), hpc.api.get("/metrics").text]
    texts += ["\n".join(hpc.logs(job["id"])) for job in page["items"]]
    texts += [p.log_path.read_text(errors="replace") for p in hpc.processes]
    everything = "\n".join(texts)
    leaked = [s for s in secrets if s and s in everything]
    assert not leaked


def _children(stack: Stack, parent_id: str) -> list[Any]:
    from sqlalchemy import select

    from submitter.db.models import Job

    with stack.runtime.reads() as session:
        return list(
            session.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.sweep_index))
        )


def _until_in(cluster: TestCluster, command: str, expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while expected not in (output := _ssh(cluster, command)):
        assert time.monotonic() < deadline, f"{command}: {output!r}"
        time.sleep(0.5)


def test_a_slurm_sweep_is_one_array_with_a_job_per_task(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    response = hpc.api.post(
        "/api/v1/jobs",
        json={
            "kind": "sweep",
            "spec": {
                "kind": "slurm",
                "spec": {
                    "cluster": "test",
                    "name": "array",
                    "command": "cat data/common.txt > out.txt; echo {{i}} >> out.txt; sleep 1",
                    "files": {
                        "provide": [{"source": "inline:shared\n", "target": "data/common.txt"}],
                        "collect": ["out.txt"],
                    },
                },
                "matrix": {"i": list(range(20))},
                "max_parallel": 4,
            },
        },
        headers=hpc.headers("user"),
    )
    assert response.status_code == 202, response.text
    sweep = response.json()
    eventually(lambda: all(c.external_id for c in _children(hpc, sweep["id"])), timeout=SLOW)
    array_id = hpc.job(sweep["id"])["external_id"]
    children = _children(hpc, sweep["id"])
    assert array_id and [c.external_id for c in children] == [
        f"{array_id}_{i}" for i in range(20)
    ]  # one sbatch: every task of one array
    last = children[-1]
    assert (
        hpc.api.post(f"/api/v1/jobs/{last.id}/cancel", headers=hpc.headers("user")).status_code
        == 200
    )
    eventually(
        lambda: sum(c.state == "succeeded" for c in _children(hpc, sweep["id"])) >= 3,
        timeout=SLOW,
    )
    cancel = hpc.api.post(f"/api/v1/jobs/{sweep['id']}/cancel", headers=hpc.headers("user"))
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"
    eventually(
        lambda: all(c.state in ("succeeded", "cancelled") for c in _children(hpc, sweep["id"])),
        timeout=SLOW,
    )
    children = _children(hpc, sweep["id"])
    done = [c for c in children if c.state == "succeeded"]
    assert len(done) >= 3 and children[-1].state == "cancelled"
    assert any(c.state == "cancelled" for c in children[:-1])  # the rest went with the parent
    for child in done:
        task = f"{array_id}_{child.sweep_index}"
        assert child.result["slurm_job_id"] == task
        accounting = child.result["slurm"]
        assert accounting["job_id"] == task and accounting["exit_code"] == 0
        # sacct where slurmdbd has the task's end already, else the controller's record
        assert accounting["source"] in ("sacct", "scontrol")
        assert _artifact(hpc, child.id, "out.txt") == f"shared\n{child.sweep_index}\n".encode()
        assert f"slurm-{task}.out" in _artifact_names(hpc, child.id)
    if slurm_cluster.accounting:  # sacct answers for one task by its ARRAY_TASK id
        task = f"{array_id}_{done[0].sweep_index}"
        _until_in(slurm_cluster, f"sacct -n -P -X -o JobID,State -j {task}", f"{task}|COMPLETED")
    assert any(f"scancel {array_id}_19" in line for line in hpc.logs(last.id))
    # The sweep's cancel went as one `scancel ARRAYID` for all its tasks, not a list.
    whole = f"scancel {array_id} on test (the whole array"
    went = [c for c in children[:-1] if c.state == "cancelled"]
    eventually(lambda: all(any(whole in line for line in hpc.logs(c.id)) for c in went))
    # A pending task scancelled before it started has no record of its own: it is gone;
    # and the array's cancel leaves none of its tasks pending or running.
    queued = _ssh(slurm_cluster, "squeue --array --noheader --format=%i --states=PD,R")
    assert not [t for t in queued.split() if t.startswith(f"{array_id}_")], queued
    table = hpc.api.get(
        f"/api/v1/jobs/{sweep['id']}/sweep",
        params={"best_by": "-slurm.elapsed_seconds"},
        headers=hpc.headers("viewer"),
    ).json()
    assert {r["external_id"] for r in table["rows"]} == {c.external_id for c in children}


def test_throttled_array_tasks_are_released_within_max_parallel(hpc: Stack) -> None:
    """max_jobs 3 leaves room for 3 of 6 tasks in the array (`%2`); the other 3 wait
    throttled and go as single jobs, never more than max_parallel children at once."""
    response = hpc.api.post(
        "/api/v1/jobs",
        json={
            "kind": "sweep",
            "spec": {
                "kind": "slurm",
                "spec": {"cluster": "limited", "command": "sleep 2; echo {{i}}"},
                "matrix": {"i": list(range(6))},
                "max_parallel": 2,
            },
        },
        headers=hpc.headers("user"),
    )
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    most = 0
    deadline = time.monotonic() + SLOW
    while True:
        children = _children(hpc, sweep_id)
        most = max(most, sum(c.phase == "running" for c in children))
        if all(c.state in ("succeeded", "failed", "cancelled") for c in children):
            break
        assert time.monotonic() < deadline, [(c.state, c.phase) for c in children]
        time.sleep(0.1)
    assert all(c.state == "succeeded" for c in children), [c.message for c in children]
    # The bound is what is checked: a child is `running` only between two monitor polls
    # that saw it so, and on a loaded machine a 2 s task can go from pending to ended
    # between polls, so that no sample sees one running (CI on 2026-12-03 saw 0).
    assert most <= 2
    singles = [c for c in children if "_" not in (c.external_id or "")]
    assert len(singles) == 3  # the throttled ones ran as single jobs, released
    assert all(any("released" in line for line in hpc.logs(c.id)) for c in singles)


def test_max_jobs_keeps_at_most_that_many_in_slurm(hpc: Stack) -> None:
    ids = [
        _slurm_job(hpc, cluster="limited", command=f"sleep 1; echo {i}")["id"] for i in range(10)
    ]
    most = 0
    deadline = time.monotonic() + SLOW
    while True:
        # One query, one snapshot: ten GETs one after the other could see a job still in
        # SLURM and, later, the one released into the slot it freed meanwhile.
        with hpc.runtime.reads() as session:
            rows = session.execute(select(Job.state, Job.phase).where(Job.id.in_(ids))).all()
        most = max(most, sum(phase in ("submitted", "pending", "running") for _, phase in rows))
        if all(state in ("succeeded", "failed", "cancelled") for state, _ in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    jobs = [hpc.job(i) for i in ids]
    assert all(j["state"] == "succeeded" for j in jobs), jobs
    assert 1 <= most <= 3
    # From the logs: from "submitted" to the monitor's "ended" (later than the real end,
    # when the monitor frees the slot), so the overlap counted here is if anything too high.
    spans = []
    for job_id in ids:
        lines = hpc.api.get(f"/api/v1/jobs/{job_id}/logs", headers=hpc.headers("admin")).json()
        at: dict[str, str] = {}
        for line in lines["items"]:  # the first "ended" is the monitor's, which frees the slot
            for key in ("submitted", "ended"):
                text = line["message"]
                if text.startswith(("submitted to", "SLURM job")) and key in text:
                    at.setdefault(key, line["at"])
        spans.append((at["submitted"], at["ended"]))
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 3, spans
    assert any(
        "throttled" in line for job_id in ids for line in hpc.logs(job_id)
    )  # 10 jobs, 3 slots: some waited


def test_sbatch_refused_for_a_submit_limit_throttles_the_job(
    hpc: Stack, slurm_cluster: TestCluster
) -> None:
    flag = _refuse_flag(slurm_cluster)
    flag.write_text("refuse\n")
    try:
        job = _slurm_job(hpc, cluster="refusing", command="echo finally")
        waiting = hpc.wait(job["id"], until=lambda j: j["phase"] == "throttled", timeout=SLOW)
        assert waiting["state"] == "running" and "AssocMaxSubmitJobLimit" in waiting["message"]
    finally:
        flag.unlink()
    done = hpc.wait(job["id"], timeout=SLOW)
    assert done["state"] == "succeeded", (done, hpc.logs(job["id"]))
    assert any("released" in line for line in hpc.logs(job["id"]))


def test_the_embedded_stack_runs_slurm_jobs_too(slurm_cluster: TestCluster, tmp_path: Path) -> None:
    """SQLite + SQLite broker + local folder (the laptop setup): hand-off, monitor, collect."""
    with make_backend("embedded", tmp_path) as backend:
        backend.env["SUBMITTER_CLUSTERS"] = json.dumps([slurm_cluster.config("test")])
        with make_stack(backend) as stack:
            job = _slurm_job(
                stack,
                command="sleep 1; echo 6 > six.txt",
                files={
                    "provide": [{"source": "inline:unused", "target": "in.txt"}],
                    "collect": ["six.txt"],
                },
            )
            done = stack.wait(job["id"], timeout=SLOW)
            assert done["state"] == "succeeded", (done, stack.logs(job["id"]))
            assert _artifact(stack, job["id"], "six.txt") == b"6\n"
            assert done["result"]["slurm"]["state"] == "COMPLETED"
