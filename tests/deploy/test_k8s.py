"""The Kubernetes manifests (deploy/k8s), rendered with `kubectl kustomize` and checked
against the code itself, not against a copy of it:

- every container's command line parses as a real `submitter` command (Click, through
  Typer) and runs the function it is meant to;
- every environment variable is a field of `Settings` (or a whitelisted non-Submitter
  one), the ConfigMap's values load as valid settings, credentials come only from Secrets,
  and every Secret key read is in the `kubectl create secret` commands of the README;
- every HTTP probe path is a route of the app (`create_app`) or of Flower;
- the workers consume exactly Celery's queues, and the KEDA triggers name the Redis lists
  and RabbitMQ queues Celery really puts those queues' messages in: checked on a live Redis
  (a private server) and a live RabbitMQ vhost (`rabbitmq_vhost()`) holding the messages
  that Submitter's Celery app and `send_job` sent to each queue, with no worker running;
- the HPA, the beat Deployment, the PodDisruptionBudgets, the security context and the
  resources are what the README says;
- the workers of the queue `command` jobs go to get what their bubblewrap sandbox needs
  (the Localhost seccomp profile deploy/seccomp/sandbox.json, an unmasked /proc in a pod of
  its own user namespace) and every pod keeps the rest (non-root, no privilege escalation,
  no capability, nothing privileged or of the host's); SUBMITTER_SANDBOX is `bwrap` for the
  API and the workers alike.

`kubectl` is installed (Debian `kubernetes-client`, apt-get as root) when missing; the tests
skip, saying why, only when it cannot be. The manifests are written for kustomize v2.0
(Debian's kubectl 1.20) and later.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
import yaml
from kombu import Connection
from pydantic import SecretStr
from starlette.routing import Match

from submitter.config import Settings, load_settings
from tests.services import _PrivateServer, _start_redis, rabbitmq_vhost

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECCOMP_PROFILE = ROOT / "deploy" / "seccomp" / "sandbox.json"
#: Where the workers' Localhost profile is, relative to the kubelet's seccomp folder.
LOCALHOST_PROFILE = "submitter/sandbox.json"
README = K8S / "README.md"
OVERLAYS = ("redis", "rabbitmq")
IMAGE = "submitter:latest"

#: Environment variables that are not Submitter settings, each with why a container has it.
NON_SUBMITTER_ENV = {
    "AWS_ACCESS_KEY_ID": "S3 credentials, read by boto3 (README, Object storage)",
    "AWS_SECRET_ACCESS_KEY": "S3 credentials, read by boto3",
    "HOME": "caches under ~ go to the /tmp emptyDir: the root filesystem is read-only",
}
#: Settings that carry credentials besides the SecretStr ones: URLs with passwords in them.
CREDENTIAL_URLS = {"database_url", "broker_url", "redis_url"}
#: What each Deployment (and the Job) runs: its name → the CLI function.
EXPECTED_COMMANDS = {
    "submitter-api": "api",
    "submitter-worker-default": "worker",
    "submitter-worker-train": "worker",
    "submitter-worker-hpc": "worker",
    "submitter-beat": "beat",
    "submitter-flower": "flower",
    "submitter-migrate": "db_upgrade",
}
#: Never connected to: nothing listens on port 9 (discard) here.
UNREACHABLE_DB = "postgresql://submitter@127.0.0.1:9/submitter"
UNREACHABLE_BROKER = "redis://127.0.0.1:9/0"

Doc = dict[str, Any]

# Room for installing kubectl on a machine without it (apt-get update + install).
pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------- rendering


def _install_kubectl() -> str | None:
    """apt-get install Debian's kubectl (as root); the reason it could not be, or None."""
    if os.geteuid() != 0:
        return "kubectl is not installed and this is not root (apt-get install kubernetes-client)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "kubernetes-client"],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(step)} failed: {error}"
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-500:]
            return f"{' '.join(step)} exited with {done.returncode}: {tail}"
    return None


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        reason = _install_kubectl()
        found = shutil.which("kubectl")
        if found is None:
            pytest.skip(f"kubectl cannot be installed: {reason or 'not on PATH after install'}")
    return found


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[Doc]]:
    """Each overlay as `kubectl kustomize` renders it, parsed."""
    out: dict[str, list[Doc]] = {}
    for overlay in OVERLAYS:
        done = subprocess.run(
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{done.stderr}"
        docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        assert docs, f"overlays/{overlay} renders nothing"
        out[overlay] = docs
    return out


def objects(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(name, pod spec) of every Deployment and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for name, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{container['name']}", container


def configmap(docs: list[Doc]) -> dict[str, str]:
    maps = objects(docs, "ConfigMap")
    assert list(maps) == ["submitter-config"], list(maps)
    return dict(maps["submitter-config"]["data"])


def consumed_queues(deployment: Doc) -> list[str]:
    """The queues the `submitter worker` of a Deployment consumes (its --queues)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _, params, _ = parse_command(container["command"][1:] + container["args"])
    queues = params["queues"] or ",".join(Settings(database_url=UNREACHABLE_DB).queues)
    return [q.strip() for q in queues.split(",") if q.strip()]


def workers(docs: list[Doc]) -> dict[str, Doc]:
    return {
        name: doc
        for name, doc in objects(docs, "Deployment").items()
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "worker"
    }


# --------------------------------------------------------------------------- the code


def parse_command(argv: list[str]) -> tuple[Any, dict[str, Any], list[str]]:
    """Parse `submitter ARGV` with the real CLI: (command, its parameters, its path).

    Click raises on an unknown command or option, a missing argument or a bad value;
    nothing is run. Duck-typed: Typer ≥ 0.2x brings its own copy of Click, older ones use
    Click itself.
    """
    from submitter.cli import app

    command: Any = typer.main.get_command(app)
    args, path = list(argv), list[str]()
    while callable(getattr(command, "list_commands", None)):  # a group
        assert args, f"`submitter {' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        context = command.context_class(command)
        sub = command.get_command(context, name)
        assert sub is not None, (
            f"`submitter {' '.join([*path, name])}` is not a command; "
            f"known: {command.list_commands(context)}"
        )
        command, path = sub, [*path, name]
    try:
        context = command.make_context(" ".join(["submitter", *path]), args)
    except Exception as error:
        explain = getattr(error, "format_message", None)  # Click's usage errors
        if not callable(explain):
            raise
        pytest.fail(f"`submitter {' '.join(argv)}`: {explain()}")
    return command, dict(context.params), path


@cache
def setting_env_names() -> frozenset[str]:
    return frozenset(f"SUBMITTER_{name.upper()}" for name in Settings.model_fields)


@cache
def credential_env_names() -> frozenset[str]:
    secret = {name for name, field in Settings.model_fields.items() if SecretStr in _types(field)}
    return frozenset(f"SUBMITTER_{n.upper()}" for n in secret | CREDENTIAL_URLS) | {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
    }


def _types(field: Any) -> set[Any]:
    annotation = field.annotation
    return {annotation, *getattr(annotation, "__args__", ())}


def celery_queues() -> list[str]:
    from submitter.worker.app import QUEUES, create_celery_app

    app = create_celery_app(
        load_settings(database_url=UNREACHABLE_DB, broker_url=UNREACHABLE_BROKER)
    )
    declared = [queue.name for queue in app.conf.task_queues]
    assert declared == list(QUEUES)
    return declared


# --------------------------------------------------------------------------- structure


def test_every_overlay_renders_the_whole_platform(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        assert set(objects(docs, "Deployment")) == set(EXPECTED_COMMANDS) - {"submitter-migrate"}
        assert set(objects(docs, "Job")) == {"submitter-migrate"}
        assert set(objects(docs, "Service")) == {"submitter-api", "submitter-flower"}
        assert set(objects(docs, "HorizontalPodAutoscaler")) == {"submitter-api"}
        assert set(objects(docs, "ScaledObject")) == set(workers(docs)), overlay
        assert len(objects(docs, "TriggerAuthentication")) == 1, overlay
        assert not objects(docs, "Secret"), f"{overlay}: secret values are never committed"
        for name, container in containers(docs):
            assert container["image"] == IMAGE, f"{overlay} {name}: {container['image']}"


def test_every_container_runs_a_real_submitter_command(rendered: dict[str, list[Doc]]) -> None:
    from submitter.cli import operations, server

    for docs in rendered.values():
        for name, container in containers(docs):
            # `submitter` itself is PID 1: no shell that would keep SIGTERM from it.
            assert container["command"] == ["submitter"], name
            command, params, path = parse_command(container["args"])
            deployment = name.split("/")[0]
            expected = EXPECTED_COMMANDS[deployment]
            function = getattr(server, expected, None) or getattr(operations, expected)
            assert inspect.unwrap(command.callback) is function, (
                f"{name} runs `submitter {' '.join(path)}`"
            )
            if expected == "worker":
                # A pod sees the node's CPUs: the pool size is always given.
                assert params["concurrency"], f"{name}: no --concurrency"
            if expected == "api":
                assert params["workers"] == 1, "one Uvicorn process per pod; scale with pods"


def test_env_names_are_settings(rendered: dict[str, list[Doc]]) -> None:
    known = setting_env_names() | set(NON_SUBMITTER_ENV)
    for overlay, docs in rendered.items():
        for key in configmap(docs):
            assert key in setting_env_names(), f"ConfigMap key {key} is not a setting"
        for name, container in containers(docs):
            for var in container.get("env", []):
                assert var["name"] in known, f"{overlay} {name}: {var['name']} is not a setting"
            for source in container.get("envFrom", []):
                # Secrets key by key (so that they can be checked); only the ConfigMap whole.
                assert set(source) == {"configMapRef"}, f"{name}: {source}"
                assert source["configMapRef"]["name"] == "submitter-config"
            names = [var["name"] for var in container.get("env", [])]
            assert len(names) == len(set(names)), f"{name}: {names}"


def test_configmap_values_are_valid_settings(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        data = configmap(docs)
        # The credentials a pod gets from the Secret, as dummies.
        settings = load_settings(
            **{key.removeprefix("SUBMITTER_").lower(): value for key, value in data.items()},
            database_url=UNREACHABLE_DB,
            broker_url=UNREACHABLE_BROKER,
        )
        assert settings.api_host == "0.0.0.0", "the API must listen beyond the pod"
        assert str(settings.home) == "/var/lib/submitter"
        assert settings.storage_url is not None and settings.storage_url.startswith("s3://"), (
            "every API and worker pod must see the same store"
        )
        # Per Deployment (--queues, --concurrency), never for all.
        assert "SUBMITTER_WORKER_QUEUES" not in data
        assert "SUBMITTER_WORKER_CONCURRENCY" not in data


def test_credentials_come_only_from_secrets(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        leaked = set(configmap(docs)) & credential_env_names()
        assert not leaked, f"{overlay}: credentials in the ConfigMap: {leaked}"
        for name, container in containers(docs):
            for var in container.get("env", []):
                if var["name"] in credential_env_names():
                    assert "value" not in var and "secretKeyRef" in var.get("valueFrom", {}), (
                        f"{overlay} {name}: {var['name']} must come from a Secret"
                    )


#: What each command cannot run without: unset, the database and broker fall back to the
#: embedded SQLite stack in the pod's emptyDir (config.py), silently and per pod.
NEEDS = {
    "api": {"database_url", "broker_url", "storage_url", "admin_key"},
    "worker": {"database_url", "broker_url", "storage_url"},
    "beat": {"database_url", "broker_url"},
    "flower": {"broker_url", "flower_password"},
    "db_upgrade": {"database_url"},
}


def test_no_pod_falls_back_to_the_embedded_stack(rendered: dict[str, list[Doc]]) -> None:
    embedded = {name for name, field in Settings.model_fields.items() if field.default is None} & {
        "database_url",
        "broker_url",
        "storage_url",
    }
    assert embedded == {"database_url", "broker_url", "storage_url"}
    for overlay, docs in rendered.items():
        data = configmap(docs)
        for name, container in containers(docs):
            given = set(data)
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if "value" in var or (ref and not ref.get("optional")):
                    given.add(var["name"])
            needs = NEEDS[EXPECTED_COMMANDS[name.split("/")[0]]]
            missing = {f"SUBMITTER_{n.upper()}" for n in needs} - given
            assert not missing, f"{overlay} {name} may start without {sorted(missing)}"


def _referenced_secrets(docs: list[Doc]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({secret: required keys}, {secret: optional keys}) the manifests read."""
    required: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    for _, container in containers(docs):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                into = optional if ref.get("optional") else required
                into.setdefault(ref["name"], set()).add(ref["key"])
    for auth in objects(docs, "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            required.setdefault(ref["name"], set()).add(ref["key"])
    return required, optional


def documented_secrets() -> dict[str, dict[str, set[str]]]:
    """{overlay: {secret: keys}} of the README's `kubectl create secret generic` commands,
    each under a `# overlays/NAME` line."""
    text = re.sub(r"\\\n\s*", " ", README.read_text())
    found: dict[str, dict[str, set[str]]] = {}
    overlay = None
    for line in text.splitlines():
        marker = re.fullmatch(r"\s*# overlays/(\w+)\s*", line)
        if marker:
            overlay = marker.group(1)
            continue
        command = re.search(r"kubectl .*create secret generic (\S+)(.*)", line)
        if command and overlay:
            keys = set(re.findall(r"--from-literal=([\w.-]+)=", command.group(2)))
            found.setdefault(overlay, {})[command.group(1)] = keys
            overlay = None
    return found


def test_every_secret_key_read_is_documented(rendered: dict[str, list[Doc]]) -> None:
    documented = documented_secrets()
    assert set(documented) == set(OVERLAYS), f"README commands for {set(documented)}"
    for overlay, docs in rendered.items():
        required, optional = _referenced_secrets(docs)
        assert set(required) == {"submitter"}, required
        for secret, keys in documented[overlay].items():
            missing = required.get(secret, set()) - keys
            assert not missing, f"{overlay}: README's secret {secret} lacks {sorted(missing)}"
            unused = keys - required.get(secret, set()) - optional.get(secret, set())
            assert not unused, f"{overlay}: README's secret {secret} has unread {sorted(unused)}"
        assert set(required) <= set(documented[overlay])
        # Mounted secrets (SLURM cluster files) are optional, and documented too.
        for _, spec in pod_specs(docs):
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    secret = volume["secret"]
                    assert secret.get("optional") is True, volume
                    assert f"create secret generic {secret['secretName']} " in README.read_text()


# --------------------------------------------------------------------------- probes, ports


def test_probe_paths_are_routes(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    from flower.urls import handlers
    from flower.views.error import NotFoundErrorHandler

    from submitter.api.app import create_app
    from submitter.api.routes.health import READY_TIMEOUT_SECONDS

    # Building the app connects to nothing (the engine and the store are lazy).
    app = create_app(
        load_settings(
            home=tmp_path,
            database_url=UNREACHABLE_DB,
            broker_url=UNREACHABLE_BROKER,
            storage_url=(tmp_path / "artifacts").as_uri(),
        )
    )
    paths = app.openapi()["paths"]

    def api_serves(path: str) -> bool:
        """The app's router dispatches `GET path` (as it would a request), and documents it."""
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path}
        scope |= {"root_path": "", "headers": [], "query_string": b""}
        routed = any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)
        return routed and "get" in paths.get(path, {})

    def flower_serves(path: str) -> bool:
        """Flower's first matching handler (as tornado picks it) is a page, not its
        catch-all 404, and answers without the password (no `@authenticated`)."""
        for handler in handlers:  # tornado URLSpec objects or (regex, class, ...) tuples
            if hasattr(handler, "regex"):
                regex, cls = handler.regex, handler.handler_class
            else:
                regex, cls = re.compile(handler[0]), handler[1]
            if regex.fullmatch(path):
                return cls is not NotFoundErrorHandler and not hasattr(cls.get, "__wrapped__")
        return False

    for docs in rendered.values():
        for name, container in containers(docs):
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None or "httpGet" not in probe:
                    continue
                path, port = probe["httpGet"]["path"], probe["httpGet"]["port"]
                assert port in ports or port in ports.values(), f"{name} {kind}: port {port}"
                if name.startswith("submitter-flower/"):
                    assert flower_serves(path), f"{name} {kind}: Flower does not serve {path}"
                else:
                    assert api_serves(path), f"{name} {kind}: {path} is not a GET route"
        (api,) = [c for name, c in containers(docs) if name == "submitter-api/api"]
        assert api["livenessProbe"]["httpGet"]["path"] == "/health"
        assert api["startupProbe"]["httpGet"]["path"] == "/health"
        assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
        # /ready answers within READY_TIMEOUT_SECONDS whatever its checks do.
        assert api["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_SECONDS
        (port,) = api["ports"]
        assert port["containerPort"] == int(configmap(docs)["SUBMITTER_API_PORT"])


def test_services_reach_their_pods(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        data = configmap(docs)
        expected_port = {
            "submitter-api": int(data["SUBMITTER_API_PORT"]),
            "submitter-flower": int(data["SUBMITTER_FLOWER_PORT"]),
        }
        deployments = objects(docs, "Deployment")
        for name, service in objects(docs, "Service").items():
            selector = service["spec"]["selector"]
            matching = [
                d
                for d in deployments.values()
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert [d["metadata"]["name"] for d in matching] == [name], selector
            (container,) = matching[0]["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for port in service["spec"]["ports"]:
                assert ports[port["targetPort"]] == expected_port[name] == port["port"]


# --------------------------------------------------------------------------- api, beat, pods


def test_hpa_scales_the_api_on_cpu(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        hpa = objects(docs, "HorizontalPodAutoscaler")["submitter-api"]["spec"]
        target = hpa["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", "submitter-api")
        assert target["apiVersion"] == "apps/v1"
        assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        api = objects(docs, "Deployment")["submitter-api"]["spec"]
        assert "replicas" not in api, "the HPA owns the replica count"
        (container,) = api["template"]["spec"]["containers"]
        assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a request"
        pdb = objects(docs, "PodDisruptionBudget")["submitter-api"]["spec"]
        assert pdb["minAvailable"] < hpa["minReplicas"], "a drain must be able to evict one"


def test_beat_is_one_replica_recreated(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        beat = objects(docs, "Deployment")["submitter-beat"]["spec"]
        assert beat["replicas"] == 1
        assert beat["strategy"] == {"type": "Recreate"}
        assert "submitter-beat" not in objects(docs, "HorizontalPodAutoscaler")
        assert "submitter-beat" not in objects(docs, "ScaledObject")


def test_migration_job_runs_db_upgrade(rendered: dict[str, list[Doc]]) -> None:
    from submitter.cli.server import db_upgrade

    for docs in rendered.values():
        job = objects(docs, "Job")["submitter-migrate"]["spec"]
        (container,) = job["template"]["spec"]["containers"]
        command, params, path = parse_command(container["args"])
        assert path == ["db", "upgrade"] and inspect.unwrap(command.callback) is db_upgrade
        assert params["revision"] == "head"
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        assert job["backoffLimit"] >= 1


def test_every_pod_is_non_root_with_resources(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        home = configmap(docs)["SUBMITTER_HOME"]
        for name, spec in pod_specs(docs):
            where = f"{overlay} {name}"
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
            assert pod["runAsGroup"] > 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
            assert spec["automountServiceAccountToken"] is False, where
            empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
            for container in spec["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert not sc.get("capabilities", {}).get("add"), where
                assert not sc.get("privileged"), where
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][part]), where
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                # The read-only root leaves SUBMITTER_HOME and /tmp writable, as emptyDirs.
                assert mounts.get(home) in empty_dirs, f"{where}: {home}"
                assert mounts.get("/tmp") in empty_dirs, f"{where}: /tmp"


def _sandbox_queue() -> str:
    """The queue `command` jobs (users' code, run in a sandbox) go to."""
    from submitter.jobs.registry import all_kinds

    return str(all_kinds()["command"].queue)


def test_command_workers_get_the_sandbox_and_nothing_is_privileged(
    rendered: dict[str, list[Doc]],
) -> None:
    queue = _sandbox_queue()
    assert SECCOMP_PROFILE.is_file()
    # The README says how the profile reaches the nodes, at the path the pods name.
    assert f"/var/lib/kubelet/seccomp/{LOCALHOST_PROFILE}" in README.read_text()
    for overlay, docs in rendered.items():
        data = configmap(docs)
        assert data.get("SUBMITTER_SANDBOX") == "bwrap", overlay
        assert Settings(database_url=UNREACHABLE_DB, sandbox=data["SUBMITTER_SANDBOX"])
        sandboxed = {name for name, d in workers(docs).items() if queue in consumed_queues(d)}
        assert sandboxed == {f"submitter-worker-{queue}"}, f"{overlay}: {sandboxed}"
        for name, spec in pod_specs(docs):
            where = f"{overlay} {name}"
            for host in ("hostPID", "hostIPC", "hostNetwork"):
                assert not spec.get(host), f"{where}: {host}"
            assert not [v for v in spec.get("volumes", []) if "hostPath" in v], where
            for container in spec.get("initContainers", []) + spec["containers"]:
                sc = container["securityContext"]
                assert not sc.get("privileged"), where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["runAsNonRoot"] is True, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                # The API decides on users' command jobs with the workers' word for it.
                env = {e["name"] for e in container.get("env", [])}
                assert "SUBMITTER_SANDBOX" not in env, f"{where}: set once, in the ConfigMap"
                assert {"configMapRef": {"name": "submitter-config"}} in container["envFrom"]
                if name in sandboxed:
                    assert sc["seccompProfile"] == {
                        "type": "Localhost",
                        "localhostProfile": LOCALHOST_PROFILE,
                    }, where
                    assert sc["procMount"] == "Unmasked", where
                    # Kubernetes allows an unmasked /proc only in a pod's own user namespace.
                    assert spec["hostUsers"] is False, where
                else:  # the pod's RuntimeDefault profile, the runtime's masked /proc
                    assert "seccompProfile" not in sc, where
                    assert sc.get("procMount", "Default") == "Default", where


# --------------------------------------------------------------------------- workers


def test_workers_consume_every_queue_and_stop_within_the_lease_rules(
    rendered: dict[str, list[Doc]],
) -> None:
    from submitter.jobs.registry import all_kinds

    queues = celery_queues()
    assert set(queues) >= {kind.queue for kind in all_kinds().values()}
    assert set(Settings(database_url=UNREACHABLE_DB).queues) == set(queues)
    for overlay, docs in rendered.items():
        data = configmap(docs)
        lease = float(data["SUBMITTER_JOB_LEASE_SECONDS"])
        visibility = int(data["SUBMITTER_VISIBILITY_TIMEOUT_SECONDS"])
        consumed: list[str] = []
        pdbs = objects(docs, "PodDisruptionBudget")
        for name, deployment in workers(docs).items():
            spec = deployment["spec"]
            mine = consumed_queues(deployment)
            assert len(mine) == 1, f"{name}: one queue per Deployment, got {mine}"
            consumed += mine
            assert "replicas" not in spec, f"{name}: KEDA owns the replica count"
            grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
            # Warm shutdown time for the running jobs, well past a lease; and Redis must
            # not redeliver a message whose job may still be finishing.
            assert lease < grace < visibility, f"{overlay} {name}: grace {grace}"
            (container,) = spec["template"]["spec"]["containers"]
            assert "lifecycle" not in container, "nothing may stop Celery but its SIGTERM"
            labels = spec["template"]["metadata"]["labels"]
            selector = pdbs[name]["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{name}: its PDB selects other pods"
            assert pdbs[name]["spec"].get("maxUnavailable") == 1
        assert sorted(consumed) == sorted(queues), f"{overlay}: workers consume {consumed}"


def _trigger_queues(docs: list[Doc], trigger_type: str, name_key: str) -> dict[str, str]:
    """{queue the target Deployment consumes: the queue name the trigger measures}."""
    auths = set(objects(docs, "TriggerAuthentication"))
    deployments = workers(docs)
    found: dict[str, str] = {}
    for name, scaled in objects(docs, "ScaledObject").items():
        spec = scaled["spec"]
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in deployments, f"{name} scales {target['name']}"
        (queue,) = consumed_queues(deployments[target["name"]])
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] and spec["maxReplicaCount"]
        assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
        (trigger,) = spec["triggers"]
        assert trigger["type"] == trigger_type, name
        assert trigger["authenticationRef"]["name"] in auths, name
        found[queue] = trigger["metadata"][name_key]
    return found


def test_redis_scaled_objects(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["redis"]
    lists = _trigger_queues(docs, "redis", "listName")
    assert sorted(lists) == sorted(celery_queues())
    for scaled in objects(docs, "ScaledObject").values():
        metadata = scaled["spec"]["triggers"][0]["metadata"]
        assert int(metadata["listLength"]) >= 1
        assert int(metadata["activationListLength"]) >= 0
        assert int(metadata["databaseIndex"]) >= 0
    (auth,) = objects(docs, "TriggerAuthentication").values()
    params = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
    assert params == {"address", "password"}


def test_rabbitmq_scaled_objects(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["rabbitmq"]
    names = _trigger_queues(docs, "rabbitmq", "queueName")
    # A Celery queue is a RabbitMQ queue of the same name.
    assert names == {queue: queue for queue in celery_queues()}
    for scaled in objects(docs, "ScaledObject").values():
        metadata = scaled["spec"]["triggers"][0]["metadata"]
        assert metadata["mode"] == "QueueLength" and metadata["protocol"] == "amqp"
        assert float(metadata["value"]) > 0 and float(metadata["activationValue"]) >= 0
    (auth,) = objects(docs, "TriggerAuthentication").values()
    (ref,) = auth["spec"]["secretTargetRef"]
    # The same broker URL (vhost included) the workers use.
    assert (ref["parameter"], ref["key"]) == ("host", "SUBMITTER_BROKER_URL")


def _send(broker_url: str, tmp_path: Path) -> dict[str, list[str]]:
    """Send a different number of job messages to each queue, with Submitter's own Celery
    app and `send_job` (what the API does after committing a job); no worker runs."""
    from submitter.worker.app import create_celery_app
    from submitter.worker.dispatch import send_job

    settings = load_settings(home=tmp_path, database_url=UNREACHABLE_DB, broker_url=broker_url)
    celery = create_celery_app(settings)
    sent: dict[str, list[str]] = {}
    try:
        for count, queue in enumerate(celery_queues(), start=2):
            for _ in range(count):
                job_id = uuid.uuid4().hex
                send_job(celery, job_id, queue)
                sent.setdefault(queue, []).append(job_id)
    finally:
        celery.close()
    return sent


@contextmanager
def private_redis() -> Iterator[str]:
    """A Redis server of this test's own (tests.services starts it, installing redis-server
    when missing), stopped at the end.

    Not the suite's shared test database (`redis_database()`): a worker of another test, or
    of another test run on this machine, blocked on that database's `default` list would
    take a message from under the count.
    """
    server = _PrivateServer("redis", tempfile.mkdtemp(prefix="submitter-k8s-redis-"))
    try:
        _start_redis(server)
        yield f"{server.url}/0"
    finally:
        server.stop()


def test_redis_list_names_hold_the_queued_jobs(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    from submitter.worker.dispatch import RUN_JOB_TASK

    lists = _trigger_queues(rendered["redis"], "redis", "listName")
    with private_redis() as url:
        sent = _send(url, tmp_path)
        with redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) as client:
            for queue, job_ids in sent.items():
                key = lists[queue]
                assert client.llen(key) == len(job_ids), f"LLEN {key!r} (queue {queue})"
                in_list = []
                for raw in client.lrange(key, 0, -1):
                    message = json.loads(raw)
                    assert message["headers"]["task"] == RUN_JOB_TASK
                    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
                    in_list.append(args[0])
                assert sorted(in_list) == sorted(job_ids), queue
            # Nothing went to another list (a priority list `default\x06\x163`, a prefix).
            all_lists = {
                key.decode() for key in client.scan_iter(count=1000) if client.type(key) == b"list"
            }
            assert all_lists == set(lists.values()), all_lists


def test_rabbitmq_queue_names_hold_the_queued_jobs(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    names = _trigger_queues(rendered["rabbitmq"], "rabbitmq", "queueName")
    with rabbitmq_vhost() as url:
        sent = _send(url, tmp_path)
        with Connection(url, connect_timeout=5) as connection:
            channel = connection.channel()
            # What KEDA's amqp QueueLength reads: a passive declare's ready message count.
            expected = {names[queue]: len(job_ids) for queue, job_ids in sent.items()}
            deadline = time.monotonic() + 15
            while True:
                counts = {
                    name: channel.queue_declare(queue=name, passive=True).message_count
                    for name in expected
                }
                if counts == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert counts == expected
            channel.close()


# --------------------------------------------------------------------------- README


def test_readme_first_apply_takes_only_what_the_migration_needs(
    rendered: dict[str, list[Doc]],
) -> None:
    """The README applies `-l 'KEY notin (...)'` first, waits for the Job, then all."""
    text = README.read_text()
    for path in re.findall(r"deploy/k8s/overlays/(\w+)", text):
        assert path in OVERLAYS, path
    match = re.search(r"apply -k \S+ -l '([\w./-]+) notin \(([\w,]+)\)'", text)
    assert match, "no first `kubectl apply -l` in the README"
    key, excluded = match.group(1), set(match.group(2).split(","))
    for docs in rendered.values():
        selected = {
            (doc["kind"], doc["metadata"]["name"])
            for doc in docs
            if doc["metadata"].get("labels", {}).get(key) not in excluded
        }
        job = objects(docs, "Job")["submitter-migrate"]["spec"]["template"]["spec"]
        assert ("Job", "submitter-migrate") in selected
        assert ("ConfigMap", job["containers"][0]["envFrom"][0]["configMapRef"]["name"]) in selected
        assert ("ServiceAccount", job["serviceAccountName"]) in selected
        servers = {kind for kind, _ in selected} & {"Deployment", "ScaledObject", "Service"}
        assert not servers, f"the first apply starts {servers}"
