"""The container harness of the deploy tests: a real engine, real images, deploy/compose.yaml.

What it does, each step only when needed:

* installs Debian's `docker.io`, `docker-compose` and `debootstrap` (root, apt-get);
* starts `dockerd` when none answers, and stops it at the end only if it started it;
* builds the images, each tagged by a hash of what goes into it so that a second run finds
  them and takes seconds: a Debian base (`debootstrap --variant=minbase bookworm`, then
  `docker import`; nothing can be pulled here), stand-ins for the images compose takes from
  variables (Python for the image's `BASE_IMAGE`, PostgreSQL and Redis from Debian's
  packages, an S3 store from moto's server mode, a test dependency), and the Submitter image
  from deploy/Dockerfile with a wheelhouse made on the host (`pip` cannot reach the index
  from inside a container here);
* brings the compose project up under a unique name with short timings, and takes it down
  with its volumes and network at the end, also when a test failed.

Only when the engine cannot be installed or started do the tests skip, saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CACHE = Path(os.environ.get("SUBMITTER_TEST_DOCKER_CACHE", "/var/cache/submitter-deploy-tests"))
PROJECT_PREFIX = "submitterdt"
BASE_TAG = "submitter-test/debian:bookworm-minbase"
#: Short timings, as the rest of the suite uses (tests/conftest.py FAST_TIMINGS).
FAST_TIMINGS = {
    "SUBMITTER_JOB_LEASE_SECONDS": "5",
    "SUBMITTER_REQUEUE_AFTER_SECONDS": "3",
    "SUBMITTER_SCHEDULER_TIMES": "1|1|0.5|1",
    "SUBMITTER_CANCEL_GRACE_SECONDS": "2",
    "SUBMITTER_JOB_MAX_ATTEMPTS": "5",
    "SUBMITTER_WORKER_CONCURRENCY": "2",
}


def log(message: str) -> None:
    print(f"[deploy] {message}", file=sys.stderr, flush=True)


#: Figures the closing notes and the README quote (image size, build and start-up times),
#: printed in pytest's terminal summary so that CI's output carries them.
FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("deploy figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def run(
    args: list[str],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        input=input,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:6])} ... exited {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


# --- the engine ------------------------------------------------------------------------------


def _docker_binary() -> str | None:
    # Debian's client matches Debian's dockerd; another client on PATH may be far newer.
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")


def _missing_tools() -> list[str]:
    missing = []
    if _docker_binary() is None or shutil.which("dockerd") is None:
        missing.append("docker.io")
    if shutil.which("docker-compose") is None:
        missing.append("docker-compose")
    if shutil.which("debootstrap") is None:
        missing.append("debootstrap")
    return missing


def _install(packages: list[str]) -> str | None:
    """apt-get install `packages`; None when done, else why not."""
    if os.geteuid() != 0:
        return f"{', '.join(packages)} missing and the tests do not run as root"
    if shutil.which("apt-get") is None:
        return f"{', '.join(packages)} missing and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300", *packages]
    output = ""
    for attempt in range(2):
        if attempt:  # stale package lists on a fresh machine
            run(["apt-get", "update"], env=env, check=False, timeout=600)
        log(f"apt-get install {' '.join(packages)}")
        done = run(command, env=env, check=False, timeout=1200)
        if done.returncode == 0:
            return None
        output = (done.stdout + done.stderr)[-2000:]
    return f"apt-get install {' '.join(packages)} failed:\n{output}"


#: Run by docker-compose 1.x's own Python: teaches it the one Compose Specification option
#: of deploy/compose.yaml that it predates, `security_opt: [systempaths=unconfined]` (the
#: worker's unmasked /proc, which its job sandbox needs), the way `docker compose` v2 and
#: `docker run` do it: no masked and no read-only paths (HostConfig.MaskedPaths and
#: ReadonlyPaths empty) instead of passing the option to the engine, which refuses it.
#: Nothing else changes; 1.x reads the seccomp profile's path from the working directory,
#: so Compose runs it from deploy/, where that path and v2's (the compose file's folder)
#: agree.
COMPOSE_V1_SHIM = """\
import sys
import compose.service
from compose.cli.main import main

UNCONFINED = "systempaths=unconfined"
host_config = compose.service.Service._get_container_host_config


def _get_container_host_config(self, override_options, one_off=False):
    opts = self.options.get("security_opt") or []
    if not any(opt.value == UNCONFINED for opt in opts):
        return host_config(self, override_options, one_off)
    saved = self.options
    self.options = dict(saved, security_opt=[o for o in opts if o.value != UNCONFINED])
    try:
        config = host_config(self, override_options, one_off)
    finally:
        self.options = saved
    config["MaskedPaths"] = []
    config["ReadonlyPaths"] = []
    return config


compose.service.Service._get_container_host_config = _get_container_host_config
sys.argv[0] = "docker-compose"
sys.exit(main())
"""


def _compose_v1_shim(compose_bin: str) -> list[str]:
    """The command that runs `compose_bin`: itself, or for docker-compose 1.x (a Python
    script) its interpreter with COMPOSE_V1_SHIM."""
    version = run([compose_bin, "version", "--short"], timeout=60, check=False).stdout.strip()
    if not version.startswith("1."):
        return [compose_bin]
    first = Path(compose_bin).read_text(errors="replace").split("\n", 1)[0]
    python = first.removeprefix("#!").strip().split()[0] if first.startswith("#!") else ""
    if not python or not Path(python).exists():
        return [compose_bin]
    return [python, "-c", COMPOSE_V1_SHIM]


@dataclass
class Engine:
    docker: str
    compose: list[str]
    dockerd: subprocess.Popen[bytes] | None = None

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return run([self.docker, *args], timeout=timeout, check=check).stdout

    def ok(self) -> bool:
        try:
            done = run(
                [self.docker, "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def image_exists(self, tag: str) -> bool:
        return run([self.docker, "image", "inspect", tag], check=False, timeout=60).returncode == 0


def _start_dockerd(engine: Engine) -> str | None:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "dockerd is not installed"
    if os.geteuid() != 0:
        return "no container engine answers and the tests do not run as root to start dockerd"
    CACHE.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "dockerd.log"
    log(f"starting dockerd (log {log_path})")
    with log_path.open("ab") as output:
        engine.dockerd = subprocess.Popen(
            [dockerd, "--host=unix:///var/run/docker.sock"],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if engine.dockerd.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            engine.dockerd = None
            return f"dockerd exited at start:\n{tail}"
        if engine.ok():
            return None
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:]
    _stop_dockerd(engine)
    return f"dockerd did not answer within 90 s:\n{tail}"


def _stop_dockerd(engine: Engine) -> None:
    process, engine.dockerd = engine.dockerd, None
    if process is None or process.poll() is not None:
        return
    log("stopping the dockerd these tests started")
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    missing = _missing_tools()
    if missing:
        why = _install(missing)
        if why is not None:
            pytest.skip(f"no container engine: {why}")
    docker = _docker_binary()
    assert docker is not None
    compose_bin = shutil.which("docker-compose")
    compose = _compose_v1_shim(compose_bin) if compose_bin else [docker, "compose"]
    found = Engine(docker, compose)
    if not found.ok():
        why = _start_dockerd(found)
        if why is not None:
            pytest.skip(f"no container engine: {why}")
    _remove_stale_projects(found)
    try:
        yield found
    finally:
        _stop_dockerd(found)


def _remove_stale_projects(engine: Engine) -> None:
    """Take down projects of earlier test runs whose process is gone (a killed run)."""
    names = engine(
        "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}', check=False
    ).split()
    for name in sorted(set(names)):
        if not name.startswith(PROJECT_PREFIX):
            continue
        pid = name.removeprefix(PROJECT_PREFIX).split("x")[0]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue
        log(f"removing the stale project {name}")
        _remove_project(engine, name)


def _remove_project(engine: Engine, name: str) -> None:
    label = f"label=com.docker.compose.project={name}"
    containers = engine("ps", "-aq", "--filter", label, check=False).split()
    if containers:
        engine("rm", "-f", "-v", *containers, check=False, timeout=120)
    networks = engine("network", "ls", "-q", "--filter", label, check=False).split()
    if networks:
        engine("network", "rm", *networks, check=False)
    volumes = engine("volume", "ls", "-q", "--filter", label, check=False).split()
    if volumes:
        engine("volume", "rm", "-f", *volumes, check=False)


# --- images ----------------------------------------------------------------------------------


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tree_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build(engine: Engine, tag: str, context: Path, *args: str, timeout: float = 1200) -> None:
    started = time.monotonic()
    log(f"building {tag}")
    done = run(
        [engine.docker, "build", "--rm", "--force-rm", "-t", tag, *args, str(context)],
        timeout=timeout,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker build {tag} failed:\n{done.stdout[-6000:]}\n{done.stderr}")
    log(f"built {tag} in {time.monotonic() - started:.0f} s")


def _base_image(engine: Engine) -> str:
    if engine.image_exists(BASE_TAG):
        return BASE_TAG
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        log("debootstrap --variant=minbase bookworm (about a minute)")
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], timeout=1200)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                [engine.docker, "import", "-", BASE_TAG],
                stdin=tar.stdout,
                capture_output=True,
                timeout=600,
            )
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=600)
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr.decode()[-2000:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_TAG


PYTHON_DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 python3-venv \\
    && rm -rf /var/lib/apt/lists/* \\
    && ln -s /usr/bin/python3 /usr/local/bin/python
"""

# Like the official postgres image where compose relies on it: POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, the data in /var/lib/postgresql/data, pg_isready on PATH,
# port 5432 on every address, a fast shutdown on stop.
POSTGRES_DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
    && apt-get install -y --no-install-recommends postgresql-15 \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \\
    && chmod 700 /var/lib/postgresql/data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/docker-entrypoint.sh"]
"""
POSTGRES_ENTRYPOINT = """\
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "${POSTGRES_PASSWORD:?}" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \\
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \\"$POSTGRES_DB\\" OWNER \\"$POSTGRES_USER\\"" \\
            | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql
"""

# Like the official redis image: `redis-server ...` as the command, data in /data.
REDIS_DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
    && apt-get install -y --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
"""

# Like minio/minio where compose relies on it: `server DIR ...` as the command, port 9000,
# `mc ready local` as the healthcheck. moto's S3 keeps objects in memory, so this keeps them
# in DIR: restored at start, written back every few seconds and on stop.
S3_DOCKERFILE = """\
FROM {base}
COPY wheelhouse /wheelhouse
RUN python3 -m venv /opt/s3 \\
    && /opt/s3/bin/pip install --no-index --find-links /wheelhouse "moto[server]" boto3 \\
    && rm -rf /wheelhouse
COPY minio.py /usr/local/bin/minio
COPY mc.sh /usr/local/bin/mc
RUN chmod 755 /usr/local/bin/minio /usr/local/bin/mc && mkdir /data
EXPOSE 9000
ENTRYPOINT ["/opt/s3/bin/python", "/usr/local/bin/minio"]
"""
S3_SERVER = '''\
"""`minio server DIR`, stood in for by moto's S3 on :9000 with its objects kept in DIR."""
import os, signal, sys, threading
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

args = sys.argv[1:]
assert args[:1] == ["server"], f"usage: minio server DIR, not {args}"
data = Path(args[1])
server = ThreadedMotoServer(ip_address="0.0.0.0", port=9000)
server.start()
s3 = boto3.client(
    "s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
    aws_access_key_id="stand-in", aws_secret_access_key="stand-in",
)
saved: dict[tuple[str, str], str] = {}
for bucket_dir in sorted(p for p in data.iterdir() if p.is_dir()):
    s3.create_bucket(Bucket=bucket_dir.name)
    for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
        key = path.relative_to(bucket_dir).as_posix()
        s3.upload_file(str(path), bucket_dir.name, key)
        saved[(bucket_dir.name, key)] = s3.head_object(Bucket=bucket_dir.name, Key=key)["ETag"]
print(f"restored {len(saved)} object(s) from {data}", flush=True)
Path("/tmp/ready").touch()


def save() -> None:
    seen = set()
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        (data / name).mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                key = item["Key"]
                seen.add((name, key))
                if saved.get((name, key)) == item["ETag"]:
                    continue
                path = data / name / key
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(name, key, str(path) + ".part")
                os.replace(str(path) + ".part", path)
                saved[(name, key)] = item["ETag"]
    for name, key in set(saved) - seen:
        (data / name / key).unlink(missing_ok=True)
        del saved[(name, key)]


stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(2):
    try:
        save()
    except Exception as error:
        print(f"save failed: {error}", flush=True)
save()
print("saved; stopping", flush=True)
server.stop()
'''
S3_MC = """\
#!/bin/sh
# `mc ready local`: ready once the objects are restored and S3 answers.
[ -f /tmp/ready ] && exec /opt/s3/bin/python -c \\
    "import urllib.request as u, urllib.error as e
try: u.urlopen('http://127.0.0.1:9000/', timeout=3)
except e.HTTPError: pass"
exit 1
"""


def _constraints() -> str:
    """The versions installed here, so that the images run what the suite tests."""
    done = run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], timeout=120)
    lines = [
        line
        for line in done.stdout.splitlines()
        if line
        and not line.startswith(("-e", "#"))
        and " @ " not in line
        and not line.lower().startswith("submitter==")
    ]
    return "\n".join(lines) + "\n"


def _wheelhouse(
    engine: Engine, python: str, name: str, requirements: list[str], constraints: str, key: str
) -> Path:
    """Wheels for `requirements` made on the host (cached by `key`), completed for the
    image's own Python: its environment markers may differ from the host's (Debian's 3.11.2
    needs async-timeout for redis, the host's 3.11.7 does not), so what an offline install in
    the `python` image still lacks is added until it installs."""
    target = CACHE / f"wheelhouse-{name}-{key}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    constraints_file = target / "constraints.txt"
    constraints_file.write_text(constraints)
    log(f"pip wheel {' '.join(requirements)} -> {target}")
    started = time.monotonic()
    wanted = list(requirements)
    for _ in range(10):
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--constraint",
                str(constraints_file),
                "--find-links",
                str(target),
                "--wheel-dir",
                str(target),
                *wanted,
            ],
            timeout=1800,
            cwd=REPO,
        )
        names = [r if "/" not in r else "submitter" for r in requirements]
        check = run(
            [
                engine.docker,
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                f"{target}:/wheelhouse:ro",
                python,
                "sh",
                "-c",
                "python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --dry-run "
                "--no-index --find-links /wheelhouse " + " ".join(f"'{n}'" for n in names),
            ],
            timeout=600,
            check=False,
        )
        if check.returncode == 0:
            break
        found = re.findall(r"No matching distribution found for ([^;\s]+)", check.stderr)
        if not found:
            raise RuntimeError(f"offline install in {python} failed:\n{check.stderr[-3000:]}")
        log(f"wheelhouse {name}: the image's Python also needs {found}")
        wanted = found
    else:
        raise RuntimeError(f"wheelhouse {name} still incomplete:\n{check.stderr[-3000:]}")
    (target / ".complete").touch()
    log(f"wheelhouse {name} in {time.monotonic() - started:.0f} s")
    return target


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix != ".whl":
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def _standin(
    engine: Engine,
    name: str,
    dockerfile: str,
    files: dict[str, str],
    wheels: Path | None = None,
    base: str = BASE_TAG,
) -> str:
    key = _digest(
        base,
        dockerfile,
        *sorted(f"{k}\0{v}" for k, v in files.items()),
        wheels.name if wheels else "",
    )
    tag = f"submitter-test/{name}:{key}"
    if engine.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix=f"ctx-{name}-", dir=CACHE) as context:
        root = Path(context)
        (root / "Dockerfile").write_text(dockerfile.format(base=base))
        for file_name, text in files.items():
            (root / file_name).write_text(text)
        if wheels is not None:
            _link_tree(wheels, root / "wheelhouse")
        _build(engine, tag, root)
    return tag


@dataclass(frozen=True)
class Images:
    submitter: str
    python: str
    postgres: str
    redis: str
    s3: str


def _submitter_image(engine: Engine, python: str, constraints: str) -> str:
    key = _digest(
        python,
        constraints,
        # Not README.md: in the image it is only the long description of the wheel.
        _tree_digest(REPO / "pyproject.toml", REPO / "src"),
        (DEPLOY / "Dockerfile").read_text(),
    )
    tag = f"submitter-test/submitter:{key}"
    if engine.image_exists(tag):
        return tag
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps_key = _digest(constraints, *project["dependencies"])  # not the tool sections
    deps = _wheelhouse(engine, python, "submitter-deps", [str(REPO)], constraints, deps_key)
    with tempfile.TemporaryDirectory(prefix="ctx-submitter-", dir=CACHE) as context:
        root = Path(context)
        shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
        shutil.copy2(REPO / "README.md", root / "README.md")
        shutil.copytree(
            REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (root / "deploy").mkdir()
        shutil.copy2(DEPLOY / "Dockerfile", root / "deploy" / "Dockerfile")
        wheelhouse = root / "deploy" / "wheelhouse"
        _link_tree(deps, wheelhouse)
        for old in wheelhouse.glob("submitter-*.whl"):  # the one built with the deps may be old
            old.unlink()
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--wheel-dir",
                str(wheelhouse),
                str(root),
            ],
            timeout=600,
        )
        _build(
            engine,
            tag,
            root,
            "-f",
            str(root / "deploy" / "Dockerfile"),
            "--build-arg",
            f"BASE_IMAGE={python}",
        )
    # Keep the cache bounded: earlier test images and the build stages left untagged.
    for old in engine(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "submitter-test/submitter"
    ).split():
        if old != tag:
            engine("rmi", old, check=False)
    engine("image", "prune", "-f", "--filter", "label=io.submitter.stage=build", check=False)
    return tag


def build_images(engine: Engine) -> Images:
    """Every image the compose project runs, each built only when its tag is missing."""
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    base = _base_image(engine)
    python = _standin(engine, "python", PYTHON_DOCKERFILE, {}, base=base)
    postgres = _standin(
        engine, "postgres", POSTGRES_DOCKERFILE, {"entrypoint.sh": POSTGRES_ENTRYPOINT}
    )
    redis = _standin(engine, "redis", REDIS_DOCKERFILE, {})
    constraints = _constraints()
    s3_wheels = _wheelhouse(
        engine,
        python,
        "s3",
        ["moto[server]", "boto3"],
        constraints,
        _digest(constraints, S3_DOCKERFILE),
    )
    s3 = _standin(
        engine, "s3", S3_DOCKERFILE, {"minio.py": S3_SERVER, "mc.sh": S3_MC}, s3_wheels, python
    )
    submitter = _submitter_image(engine, python, constraints)
    log(f"images ready in {time.monotonic() - started:.0f} s")
    FIGURES["images built or found in"] = f"{time.monotonic() - started:.0f} s"
    size = engine("image", "inspect", "--format", "{{.Size}}", submitter, check=False).strip()
    if size.isdigit():
        FIGURES["submitter image size"] = f"{int(size) / 1e6:.0f} MB"
    return Images(submitter, python, postgres, redis, s3)


@pytest.fixture(scope="session")
def images(engine: Engine) -> Images:
    return build_images(engine)


# --- the compose project ---------------------------------------------------------------------


@dataclass
class Compose:
    engine: Engine
    name: str
    env_file: Path
    admin_key: str
    api_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        """The compose command line for this project."""
        project = ["--project-name", self.name, "--file", str(DEPLOY / "compose.yaml")]
        return [*self.engine.compose, *project, "--env-file", str(self.env_file), *args]

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = run(self.command(*args), timeout=timeout, check=False, cwd=DEPLOY)
        if check and done.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}\n{self.logs()}"
            )
        return done.stdout

    def logs(self, *services: str, tail: int = 60) -> str:
        command = self.command("logs", "--no-color", f"--tail={tail}", *services)
        try:
            done = run(command, timeout=120, check=False, cwd=DEPLOY)
        except subprocess.TimeoutExpired:
            return "(compose logs timed out)"
        return f"--- container logs ---\n{done.stdout[-20000:]}{done.stderr[-2000:]}"

    def containers(self, service: str) -> list[str]:
        """Ids of the running containers of `service`."""
        return self("ps", "-q", service).split()

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.engine("inspect", container))[0]

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=timeout,
        )

    def published_api(self) -> str:
        port = self("port", "api", "7500").strip().rsplit(":", 1)[-1]
        assert port.isdigit(), f"no published port for api: {port!r}"
        return f"http://127.0.0.1:{port}"

    def up(self, *args: str) -> float:
        """`up -d`, then wait for /ready through the published port; seconds it took."""
        started = time.monotonic()
        self("up", "-d", "--no-build", *args, timeout=600)
        self.api_url = self.published_api()
        self.wait_until(lambda: _ready(self.api_url), "/ready answering 200", timeout=240)
        return time.monotonic() - started

    def wait_until(
        self, what: Callable[[], Any], description: str, timeout: float = 60, every: float = 0.5
    ) -> Any:
        """Poll `what` until truthy; on timeout fail with the container logs."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {description}; last value "
            f"{str(value)[:2000]}\n{self.logs()}"
        )


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _env_file(path: Path, images: Images, admin_key: str) -> None:
    values = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "REDIS_PASSWORD": secrets.token_urlsafe(16),
        "S3_ACCESS_KEY": "submitter",
        "S3_SECRET_KEY": secrets.token_urlsafe(16),
        "SUBMITTER_ADMIN_KEY": admin_key,
        "SUBMITTER_FLOWER_PASSWORD": secrets.token_urlsafe(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        # Published on loopback, on ports the engine picks (`compose port` tells them).
        "SUBMITTER_API_PUBLISH": "127.0.0.1:",
        "SUBMITTER_FLOWER_PUBLISH": "127.0.0.1:",
        "SUBMITTER_IMAGE": images.submitter,
        "SUBMITTER_POSTGRES_IMAGE": images.postgres,
        "SUBMITTER_REDIS_IMAGE": images.redis,
        "SUBMITTER_S3_IMAGE": images.s3,
        "SUBMITTER_LOG_FORMAT": "json",
        # Off by default on a server deployment; test_compose.py runs command jobs.
        "SUBMITTER_COMMAND_JOBS_ENABLED": "true",
        **FAST_TIMINGS,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


@pytest.fixture(scope="module")
def compose(
    engine: Engine, images: Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Compose]:
    name = f"{PROJECT_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    admin_key = secrets.token_urlsafe(24)
    _env_file(env_file, images, admin_key)
    project = Compose(engine, name, env_file, admin_key)
    try:
        seconds = project.up("--scale", "worker=3")
        project.timings["up_to_ready"] = seconds
        log(f"compose up -> /ready in {seconds:.1f} s (project {name})")
        FIGURES["compose up (3 workers) -> /ready"] = f"{seconds:.1f} s"
        yield project
    finally:
        with contextlib.suppress(Exception):
            project("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=300)
        _remove_project(engine, name)  # whatever `down` left (it failed, or timed out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
