"""deploy/compose.yaml on a real engine: the stack comes up, trains and predicts, and keeps its
promises with workers in separate containers (each its own host): killed, cut off from the
network, Redis and PostgreSQL restarted under it, the whole project taken down and up again;
a user's command jobs run in the workers' bubblewrap sandbox, reach none of the secrets the
worker container holds, and still work with a venv.

The tests share one project (`compose` in conftest.py, three workers) and run in file order;
each leaves it as it found it: every worker container running.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import REPO, Compose, log

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

FINISHED = "finished: succeeded"


def _credit_csv() -> bytes:
    return (REPO / "tests" / "data" / "credit.csv").read_bytes()


def _submit(client: httpx.Client, kind: str, spec: dict[str, Any]) -> str:
    response = client.post("/api/v1/jobs", json={"kind": kind, "spec": spec})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _echo(client: httpx.Client, n: int, sleep: float, tag: str) -> list[str]:
    return [
        _submit(client, "echo", {"message": f"{tag}-{i}", "sleep_seconds": sleep}) for i in range(n)
    ]


def _jobs(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for job_id in ids:
        response = client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        jobs[job_id] = response.json()
    return jobs


def _log(client: httpx.Client, job_id: str) -> list[str]:
    response = client.get(f"/api/v1/jobs/{job_id}/logs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [line["message"] for line in response.json()["items"]]


def _wait_done(
    compose: Compose, client: httpx.Client, ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Wait until every job is finished; fail (with logs) on timeout or on a non-success."""
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        for job_id, job in _jobs(client, sorted(pending)).items():
            if job["state"] in ("succeeded", "failed", "cancelled"):
                done[job_id] = job
                pending.discard(job_id)
        return not pending

    compose.wait_until(finished, f"{len(ids)} jobs to finish", timeout=timeout, every=1)
    bad = {j: (v["state"], v["error"]) for j, v in done.items() if v["state"] != "succeeded"}
    assert not bad, f"jobs not succeeded: {bad}"
    return done


def _assert_once(client: httpx.Client, ids: list[str]) -> None:
    """Each job recorded one success: one `finished: succeeded` line in its log."""
    twice = {}
    for job_id in ids:
        count = _log(client, job_id).count(FINISHED)
        if count != 1:
            twice[job_id] = count
    assert not twice, f"jobs whose success was recorded other than once: {twice}"


def _host(worker: str | None) -> str:
    """`celery@<container hostname>/<pid>` -> the container hostname."""
    assert worker, "job has no worker"
    return worker.split("/")[0].removeprefix("celery@")


def _worker_by_host(compose: Compose) -> dict[str, str]:
    """Container hostname -> container id, for the running worker containers."""
    return {compose.inspect(cid)["Config"]["Hostname"]: cid for cid in compose.containers("worker")}


def _start_workers(compose: Compose) -> None:
    """Back to three running workers (after a test stopped or killed some)."""
    compose("up", "-d", "--no-build", "--no-recreate", "--scale", "worker=3", "worker")
    compose.wait_until(
        lambda: len(_worker_by_host(compose)) == 3, "three worker containers", timeout=60
    )


def test_ready_upload_train_promote_predict(compose: Compose) -> None:
    log(f"compose up to /ready: {compose.timings['up_to_ready']:.1f} s")
    assert httpx.get(f"{compose.api_url}/ready", timeout=10).status_code == 200
    with compose.client(timeout=120) as client:
        data = _credit_csv()
        uploaded = client.post(
            "/api/v1/datasets",
            files={"file": ("credit.csv", data, "text/csv")},
            data={"name": "credit"},
        )
        assert uploaded.status_code in (200, 201), uploaded.text
        spec = {
            "dataset": "credit",
            "target": "default",
            "model_name": "credit",
            "models": ["lr"],
            "folds": 2,
        }
        job = _submit(client, "train", spec)
        trained = _wait_done(compose, client, [job], timeout=300)[job]
        version = trained["result"]["version"]
        promoted = client.put("/api/v1/models/credit/aliases/production", json={"version": version})
        assert promoted.status_code == 200, promoted.text
        reader = csv.DictReader(io.StringIO(data.decode()))
        rows = [
            {k: float(v) for k, v in row.items() if k != "default"}
            for row, _ in zip(reader, range(3), strict=False)
        ]
        predicted = client.post("/api/v1/models/credit/predict", json={"rows": rows})
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert len(body["predictions"]) == 3, body


# --------------------------------------------------------------------------- the sandbox

#: Values in the env file that the worker containers hold (in their processes' environment:
#: the database, broker and S3 credentials, the admin key); a job must reach none of them.
SECRET_SETTINGS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "S3_SECRET_KEY",
    "SUBMITTER_ADMIN_KEY",
    "SUBMITTER_FLOWER_PASSWORD",
)

#: A hostile user's command job: it looks for every secret the worker container has. Each
#: line says what it found; a sandbox shows it its own processes only, no Submitter folder
#: and no network. (Spelt so that its own command line matches none of the checks.)
SNOOP = r"""
echo "id $(id -u):$(id -g)"
echo "pids $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
for f in /proc/[0-9]*/cmdline; do echo "cmdline $f: $(tr '\0' ' ' < "$f")"; done
for f in /proc/1/environ /proc/[0-9]*/environ; do
    if v=$(tr '\0' ' ' < "$f" 2>/dev/null); then echo "environ $f: $v"
    else echo "environ $f: unreadable"; fi
done
for p in /var/lib/submitter /home/submitter /opt/venv /run/secrets /etc/submitter; do
    if [ -e "$p" ]; then echo "path $p: $(ls -A "$p" 2>&1 | tr '\n' ' ')"
    else echo "path $p: absent"; fi
done
for h in postgres:5432 redis:6379 s3:9000 api:7500; do
    if (exec 3<>"/dev/tcp/${h%:*}/${h#*:}") 2>/dev/null; then echo "net $h: reachable"
    else echo "net $h: unreachable"; fi
done
env | sort | sed 's/^/env /'
"""


def _env_values(compose: Compose) -> dict[str, str]:
    lines = compose.env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _user_client(compose: Compose) -> httpx.Client:
    """A client with a new key of role `user` (made by the CLI in the api container)."""
    name = f"sandbox-{secrets.token_hex(3)}"
    out = compose("exec", "-T", "api", "submitter", "keys", "create", name, "--role", "user")
    key = out.strip().splitlines()[-1].strip()
    assert "(user)" in out and " " not in key, out
    return httpx.Client(
        base_url=compose.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def _artifact(client: httpx.Client, job_id: str, name: str) -> str:
    response = client.get(f"/api/v1/jobs/{job_id}/artifacts/{name}")
    assert response.status_code == 200, response.text
    return response.text


def test_users_command_job_is_sandboxed_and_reaches_no_secret(compose: Compose) -> None:
    values = _env_values(compose)
    hidden = {name: values[name] for name in SECRET_SETTINGS}
    assert all(len(value) >= 16 for value in hidden.values()), "test secrets too short"
    with _user_client(compose) as client:
        job_id = _submit(client, "command", {"command": SNOOP, "timeout_seconds": 60})
        job = _wait_done(compose, client, [job_id], timeout=120)[job_id]
        lines = _log(client, job_id)
        listed = [a["name"] for a in client.get(f"/api/v1/jobs/{job_id}/artifacts").json()["items"]]
        everything = "\n".join([*lines, *(_artifact(client, job_id, name) for name in listed)])
    log("sandboxed job saw:\n" + "\n".join(line for line in lines if not line.startswith("env ")))
    found = [name for name, value in hidden.items() if value in everything]
    assert not found, f"the job read the worker's {found}:\n{everything[-6000:]}"
    assert "stdout.log" in listed and set(listed) <= {"stdout.log", "stderr.log"}, listed

    said = {line.split(" ", 1)[0]: line for line in lines if " " in line}
    assert said["id"] == "id 65534:65534", said["id"]  # not the worker's uid 10001
    # Its own PID namespace: a few processes, none of the worker's (tini, submitter, Celery).
    cmdlines = [line for line in lines if line.startswith("cmdline ")]
    assert 1 <= len(cmdlines) <= 8, cmdlines
    assert not [c for c in cmdlines if "submitter worker" in c or "docker-init" in c], cmdlines
    environs = [line for line in lines if line.startswith("environ ")]
    assert environs and not [e for e in environs if "SUBMITTER_DATABASE_URL" in e], environs
    assert "path /var/lib/submitter: absent" in lines, lines  # SUBMITTER_HOME
    assert "path /home/submitter: absent" in lines and "path /opt/venv: absent" in lines
    assert [line for line in lines if line.startswith("net ")] == [
        f"net {h}: unreachable" for h in ("postgres:5432", "redis:6379", "s3:9000", "api:7500")
    ]
    env = [line for line in lines if line.startswith("env ")]
    assert not [e for e in env if e.startswith(("env AWS_", "env SUBMITTER_DATABASE"))], env
    assert job["result"]["exit_code"] == 0, job


def test_users_command_job_with_a_venv_still_works(compose: Compose) -> None:
    venv = {
        "name": f"sandboxed-{secrets.token_hex(2)}",
        "packages": [],
        "system_site_packages": True,
    }
    script = (
        "import json, os, sys\n"
        "os.makedirs('out', exist_ok=True)\n"
        "facts = {'prefix': sys.prefix, 'uid': os.getuid()}\n"
        "facts['venv'] = sys.prefix != sys.base_prefix\n"
        "open('out/facts.json', 'w').write(json.dumps(facts))\n"
        "print('facts', json.dumps(facts))\n"
    )
    spec = {
        "command": ["python", "facts.py"],
        "environment": {"venv": venv},
        "files": {
            "provide": [{"source": f"inline:{script}", "target": "facts.py"}],
            "collect": ["out/*"],
        },
        "timeout_seconds": 300,
    }
    with _user_client(compose) as client:
        job_id = _submit(client, "command", spec)
        _wait_done(compose, client, [job_id], timeout=300)
        facts = json.loads(_artifact(client, job_id, "out/facts.json"))
        lines = _log(client, job_id)
    assert facts["venv"] is True and facts["uid"] == 65534, facts
    assert venv["name"] in facts["prefix"], facts
    assert any(line.startswith("facts ") for line in lines), lines


def test_scaled_workers_share_jobs_and_run_each_once(compose: Compose) -> None:
    assert len(_worker_by_host(compose)) == 3
    with compose.client() as client:
        ids = _echo(client, 60, 0.2, "scale")
        jobs = _wait_done(compose, client, ids, timeout=240)
        hosts = Counter(_host(job["worker"]) for job in jobs.values())
        log(f"60 echo jobs by worker container: {dict(hosts)}")
        assert len(hosts) >= 2, hosts
        assert set(hosts) <= set(_worker_by_host(compose)), hosts
        assert all(job["attempts"] == 1 for job in jobs.values())
        _assert_once(client, ids)


def test_killed_worker_jobs_finish_elsewhere_once(compose: Compose) -> None:
    workers = _worker_by_host(compose)
    with compose.client() as client:
        ids = _echo(client, 6, 12, "kill")

        def victim() -> str | None:
            running = [j for j in _jobs(client, ids).values() if j["state"] == "running"]
            hosts = Counter(_host(j["worker"]) for j in running)
            return hosts.most_common(1)[0][0] if hosts else None

        host = compose.wait_until(victim, "a job running on a worker", timeout=60)
        on_victim = [
            j for j, v in _jobs(client, ids).items() if v["worker"] and _host(v["worker"]) == host
        ]
        log(f"docker kill worker {host} running {len(on_victim)} job(s)")
        compose.engine("kill", workers[host])
        jobs = _wait_done(compose, client, ids, timeout=180)
        for job_id in on_victim:
            assert _host(jobs[job_id]["worker"]) != host, jobs[job_id]
            assert jobs[job_id]["attempts"] >= 2, jobs[job_id]
        _assert_once(client, ids)
    _start_workers(compose)


def test_worker_cut_off_is_replaced_and_its_late_finish_refused(compose: Compose) -> None:
    workers = _worker_by_host(compose)
    with compose.client() as client:
        job_id = _submit(client, "echo", {"message": "cut", "sleep_seconds": 25})
        first = compose.wait_until(
            lambda: _jobs(client, [job_id])[job_id]["worker"], "the job to start", timeout=60
        )
        host = _host(first)
        log(f"docker network disconnect worker {host}")
        compose.engine("network", "disconnect", compose.network, workers[host])
        try:
            # Longer than the lease: the reconciler hands the job to another worker.
            job = compose.wait_until(
                lambda: (
                    (j := _jobs(client, [job_id])[job_id])["attempts"] >= 2
                    and j["state"] == "running"
                    and _host(j["worker"]) != host
                    and j
                ),
                "the job re-run on another worker",
                timeout=90,
            )
            log(f"re-run on {_host(job['worker'])}; reconnecting {host}")
        finally:
            compose.engine("network", "connect", compose.network, workers[host])
        done = _wait_done(compose, client, [job_id], timeout=120)[job_id]
        assert _host(done["worker"]) != host, done
        # The cut-off run comes back, finds the job no longer its own, and records nothing.
        compose.wait_until(
            lambda: any("no longer ours" in line for line in _log(client, job_id)),
            "the cut-off run's refused finish in the job log",
            timeout=90,
        )
        lines = _log(client, job_id)
        assert lines.count(FINISHED) == 1, lines
        assert _jobs(client, [job_id])[job_id]["state"] == "succeeded"


def test_redis_restart_with_jobs_queued_loses_none(compose: Compose) -> None:
    with compose.client() as client:
        compose("stop", "--timeout", "30", "worker")
        try:
            ids = _echo(client, 150, 0, "redis")
            log("docker stop redis with 150 jobs queued; 50 more sent while it is away")
            compose("stop", "redis")
            ids += _echo(client, 50, 0, "redis-away")  # accepted: the DB is the truth
            compose("start", "redis")
        finally:
            _start_workers(compose)
        _wait_done(compose, client, ids, timeout=300)
        _assert_once(client, ids)


class Load:
    """Clients that keep submitting jobs and reading them while PostgreSQL restarts."""

    def __init__(self, compose: Compose) -> None:
        self.compose = compose
        self.stop = threading.Event()
        self.codes: Counter[int] = Counter()
        self.bad: list[str] = []  # 500s, transport errors, 503s without Retry-After
        self.accepted: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with self.compose.client(timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    if i % 2:
                        response = client.post(
                            "/api/v1/jobs", json={"kind": "echo", "spec": {"message": f"pg-{i}"}}
                        )
                        if response.status_code == 202:
                            self.accepted.append(response.json()["id"])
                    else:
                        response = client.get("/api/v1/jobs", params={"limit": 5})
                except httpx.HTTPError as error:
                    self.bad.append(f"{type(error).__name__}: {error}")
                    continue
                self.codes[response.status_code] += 1
                if response.status_code >= 500 and (
                    response.status_code != 503 or "retry-after" not in response.headers
                ):
                    self.bad.append(f"{response.status_code} {response.text[:300]}")
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_postgres_restart_answers_503_and_recovers_without_restarts(compose: Compose) -> None:
    def started() -> dict[str, tuple[str, int]]:
        ids = [c for s in ("api", "worker", "beat", "flower") for c in compose.containers(s)]
        return {
            c: (i["State"]["StartedAt"], i["RestartCount"])
            for c in ids
            if (i := compose.inspect(c))
        }

    before = started()
    with Load(compose) as load:
        compose.wait_until(lambda: load.codes[202] >= 5, "jobs accepted before", timeout=60)
        log("docker stop postgres under load")
        compose("stop", "postgres")
        compose.wait_until(
            lambda: load.codes[503] >= 5, "503s while PostgreSQL is away", timeout=90
        )
        compose("start", "postgres")
        accepted = len(load.accepted)
        compose.wait_until(
            lambda: len(load.accepted) >= accepted + 5,
            "jobs accepted after the restart",
            timeout=120,
        )
    log(f"answers during the PostgreSQL restart: {dict(load.codes)}")
    assert not load.bad, load.bad[:20]
    assert load.codes[500] == 0
    assert started() == before, "a Submitter container restarted"
    with compose.client() as client:
        _wait_done(compose, client, load.accepted, timeout=240)
        _assert_once(client, load.accepted)


def test_down_then_up_keeps_jobs_datasets_and_models(compose: Compose) -> None:
    with compose.client() as client:
        jobs = client.get("/api/v1/jobs", params={"limit": 1}).json()["total"]
        datasets = client.get("/api/v1/datasets").json()
        models = client.get("/api/v1/models").json()
    assert jobs > 0 and datasets["total"] >= 1 and models["total"] >= 1
    compose("down", "--timeout", "30", timeout=300)
    seconds = compose.up("--scale", "worker=3")
    log(f"down, then up to /ready again in {seconds:.1f} s")
    with compose.client(timeout=60) as client:
        assert client.get("/api/v1/jobs", params={"limit": 1}).json()["total"] == jobs
        assert client.get("/api/v1/datasets").json() == datasets
        assert client.get("/api/v1/models").json() == models
        preview = client.get("/api/v1/datasets/credit/preview", params={"limit": 2})
        assert preview.status_code == 200, preview.text  # the Parquet is still in the store
        data = _credit_csv().decode().splitlines()
        header, first = data[0].split(","), data[1].split(",")
        row = {k: float(v) for k, v in zip(header, first, strict=True) if k != "default"}
        predicted = client.post("/api/v1/models/credit/predict", json={"rows": [row]})
        assert predicted.status_code == 200, predicted.text
        job = _submit(client, "echo", {"message": "after up"})
        _wait_done(compose, client, [job], timeout=60)


def test_image_is_non_root_without_compilers(compose: Compose) -> None:
    image = compose.inspect(compose.containers("api")[0])["Config"]["Image"]
    out = compose.engine(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "id -u; for c in gcc cc g++ clang; do command -v $c; done; true",
    )
    lines = out.split()
    assert lines[0] != "0", out
    assert lines[1:] == [], f"compilers in the image: {lines[1:]}"
    size = int(compose.engine("image", "inspect", "--format", "{{.Size}}", image))
    log(f"image {image}: {size / 1e6:.0f} MB")
    assert Path(REPO / "deploy" / "Dockerfile").read_text().count("FROM ") >= 2
