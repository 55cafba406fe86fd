"""Server commands: `api`, `worker`, `beat`, `up`, `db upgrade`."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from submitter.cli.groups import command_group

if TYPE_CHECKING:
    from submitter.config import Settings

console = Console(stderr=True)
db_app = command_group("Database administration.")


def _settings(service: str) -> Settings:
    # Imported here, not at start-up: client commands and `--help` need neither.
    from submitter.config import get_settings
    from submitter.logs import setup_logging

    settings = get_settings()
    # Services keep their records in the metadata DB too (GET /api/v1/logs/{service});
    # `db upgrade` and the `up` supervisor are not services (their children are).
    service_logs = settings if service in ("api", "worker", "beat", "flower") else None
    setup_logging(service, settings.log_level, settings.log_format, service_logs=service_logs)
    return settings


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the database migrations (run once per deployment before starting servers)."""
    from submitter.db.migrate import upgrade

    settings = _settings("cli")
    upgrade(settings, revision)
    console.print(f"database at [bold]{revision}[/bold]: {_redact(settings.db_url)}")


def api(
    host: Annotated[str | None, typer.Option(help="Default: SUBMITTER_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SUBMITTER_API_PORT")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP API (FastAPI on Uvicorn)."""
    import uvicorn

    settings = _settings("api")
    _use_jemalloc()
    if settings.is_embedded_db:
        from submitter.db.migrate import upgrade

        upgrade(settings)
    uvicorn.run(
        "submitter.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


def _use_jemalloc() -> None:
    """Arrow's jemalloc pool returns memory after dataset queries; mimalloc (the default)
    kept the API near 500 MB after a few hundred aggregates in bench/ingest.py."""
    import pyarrow

    with contextlib.suppress(NotImplementedError, AttributeError):  # built without jemalloc
        pyarrow.set_memory_pool(pyarrow.jemalloc_memory_pool())


def worker(
    concurrency: Annotated[int | None, typer.Option(help="Pool processes (default: CPUs).")] = None,
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues.")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads, solo.")] = "prefork",
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker. Reconciles once at start (jobs lost while no worker ran)."""
    from submitter.runtime import Runtime
    from submitter.worker import presence
    from submitter.worker.reconciler import reconcile

    settings = _settings("worker")
    if settings.is_embedded_db:
        from submitter.db.migrate import upgrade

        upgrade(settings)
    queue_list = (queues or ",".join(settings.queues)).split(",")
    if "train" in queue_list:
        # Import the ML stack once here: pool processes fork with it loaded, instead of
        # the first training of each spending ~4 s importing (bench/train_credit.py).
        import submitter.ml  # noqa: F401
    runtime = Runtime(settings)
    celery = runtime.celery
    celery.submitter_runtime = runtime  # type: ignore[attr-defined]
    presence.attach(celery, runtime, queue_list)
    try:
        reconcile(runtime)
    except Exception as error:  # the worker is still useful; beat reconciles again soon
        console.print(f"[yellow]start-up reconcile failed[/yellow]: {error}")
    argv = [
        "worker",
        f"--queues={queues or ','.join(settings.queues)}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if concurrency or settings.worker_concurrency:
        argv.append(f"--concurrency={concurrency or settings.worker_concurrency}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery.worker_main(argv)


def beat() -> None:
    """Run Celery beat: the reconciler (run in beat itself) and schedules, on their intervals."""
    from submitter.worker.app import create_celery_app

    settings = _settings("beat")
    celery = create_celery_app(settings)
    celery.start(
        ["beat", "--scheduler=submitter.worker.beat:Scheduler", f"--loglevel={settings.log_level}"]
    )


def flower(
    port: Annotated[int | None, typer.Option(help="Default: SUBMITTER_FLOWER_PORT")] = None,
) -> None:
    """Run Flower (live workers, tasks, broker) behind basic auth, on SUBMITTER_API_HOST.

    Flower lets anyone who reaches it revoke tasks and shut workers down, so it never starts
    without SUBMITTER_FLOWER_PASSWORD. It needs a broker with broadcast (Redis, RabbitMQ);
    on the embedded SQLite broker it shows no workers.
    """
    from submitter.worker.app import create_celery_app

    settings = _settings("flower")
    if settings.flower_password is None:
        console.print(
            "[red]SUBMITTER_FLOWER_PASSWORD is not set[/red]: Flower always runs behind "
            f"basic auth (user SUBMITTER_FLOWER_USER={settings.flower_user!r})"
        )
        raise typer.Exit(2)
    credentials = f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
    celery = create_celery_app(settings)
    # In-process argv: the password is not on this process's command line (`ps` shows
    # `submitter flower`).
    celery.start(
        [
            "flower",
            f"--address={settings.api_host}",
            f"--port={port or settings.flower_port}",
            f"--basic-auth={credentials}",
            "--purge-offline-workers=60",
        ]
    )


def up(
    concurrency: Annotated[int | None, typer.Option(help="Worker pool processes.")] = None,
) -> None:
    """Run API, worker and beat on this machine, restarting any that dies (with back-off).

    One Ctrl+C (or SIGTERM) stops all. A process that keeps dying at start (5 times in a
    row within 10 s of starting) stops all, with its last output and a non-zero exit code.
    """
    from submitter.cli.supervisor import Supervisor
    from submitter.db.migrate import upgrade

    settings = _settings("up")
    upgrade(settings)
    env = dict(os.environ)
    if settings.admin_key is None:
        env["SUBMITTER_ADMIN_KEY"] = local_admin_key(settings)
    env["SUBMITTER_HOME"] = str(settings.home)
    base = [sys.executable, "-m", "submitter"]
    worker_cmd = [*base, "worker"] + ([f"--concurrency={concurrency}"] if concurrency else [])
    commands = {"api": [*base, "api"], "worker": worker_cmd, "beat": [*base, "beat"]}
    if settings.flower_password is not None and not settings.broker.startswith("sqla+"):
        commands["flower"] = [*base, "flower"]
    supervisor = Supervisor(commands, env=env)
    url = f"http://{settings.api_host}:{settings.api_port}"
    console.print(
        f"Submitter on [bold]{url}[/bold] (web console: {url}/ui, docs: {url}/docs); "
        f"home {settings.home}"
    )
    if settings.admin_key is None:
        console.print(f"admin API key in {settings.home / 'admin.key'}")
    raise typer.Exit(supervisor.run())


def local_admin_key(settings: Settings) -> str:
    """The embedded stack's bootstrap admin key: made once, kept in the home folder (0600)."""
    path = Path(settings.ensure_home()) / "admin.key"
    if path.is_file():
        return path.read_text().strip()
    key = "sk_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def register(app: typer.Typer) -> None:
    app.command()(api)
    app.command()(worker)
    app.command()(beat)
    app.command()(flower)
    app.command()(up)
