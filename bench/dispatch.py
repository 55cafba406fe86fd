"""Dispatch benchmark: Submitter's REST API against raw Celery, on the same broker.

What it measures, per backend:

- **Submitter**: `--jobs` `echo` jobs POSTed to `/api/v1/jobs` from `--concurrency` client
  threads, run by `submitter worker --concurrency W` (prefork). The clock starts at the first
  submit and stops at the last `finished_at` of those jobs (completion is detected by polling
  the database directly, not the API). Submit→start latency = `started_at - created_at`.
- **Raw Celery**: the same number of `apply_async` calls of a no-op task
  (`bench/_raw_celery_app.py`, configured like Submitter's Celery app) from the same number of
  threads, run by a plain `celery worker` with the same pool and concurrency on the same
  broker. The task records its start (minus the `sent_at` passed as its argument) and its end.

- **Submitter, batch**: the same number of jobs POSTed to `/api/v1/jobs/batch` in chunks of
  `--batch-size` from the same client threads, run by the same worker (after the single run).

Throughput is jobs / (last completion - first submit); the ratio is Submitter / raw. The goals
on the redis backend (PostgreSQL + Redis): single >= 0.5 x raw Celery, batch >= 1.0 x.

`--repeat N` measures N pairs one after the other (raw, then Submitter, each time) and judges
the goals on the median of the pairs' ratios, printed with their range: raw Celery's own
throughput moves by up to 2x between runs on this machine (330-700 tasks/s at 1,000 tasks),
so one pair's ratio says more about the baseline's luck than about Submitter.

Backends:

- `redis`: PostgreSQL (a fresh database `submitter_bench_<random>`, dropped afterwards) and
  Redis (db flushed before and after) as broker. Addresses from `SUBMITTER_BENCH_POSTGRES_URL`
  (default postgresql://postgres@127.0.0.1:5432/postgres) and `SUBMITTER_BENCH_REDIS_URL`
  (default redis://127.0.0.1:6379/14).
- `embedded`: only `SUBMITTER_HOME` set (a temp dir): SQLite database and SQLite broker.
  The raw baseline runs on a `sqla+sqlite` broker in the same folder.

Run from the repository root:

    .venv/bin/python bench/dispatch.py [--jobs 1000] [--concurrency 8] [--batch-size 100]
        [--workers-concurrency 2] [--backend redis|embedded|both] [--timeout 300] [--repeat 1]

Exit status 0 when every job completed (whatever the figures), 1 when jobs did not complete
within the timeout or a service or process failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import _raw_celery_app as raw  # noqa: E402
from _common import BenchError, clean_env, free_port, log, percentile  # noqa: E402
from _common import signal_group as _signal_group  # noqa: E402

from submitter.db.models import Job  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
RAW_QUEUE = "bench_raw"
#: Goals on PostgreSQL + Redis (issue 14): jobs/s of each mode over raw Celery's.
GOALS = {"single": 0.5, "batch": 1.0}
POLL_SECONDS = 0.1
START_TIMEOUT = 60.0


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    """One side of one backend: how many jobs, over how long, and their start latencies."""

    jobs: int
    submit_seconds: float  # first submit → last submit returned
    total_seconds: float  # first submit → last completion
    latencies: list[float]  # submit → start, seconds
    #: CPU seconds of each part over the run (client: this process while it submits).
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.total_seconds

    def cpu_ms_per_job(self, part: str | None = None) -> float:
        """CPU per job of one part, or of all of them (`None`)."""
        seconds = sum(self.cpu.values()) if part is None else self.cpu.get(part, 0.0)
        return 1000 * seconds / self.jobs

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


@dataclass
class Row:
    backend: str
    #: Submitter's runs by mode: `single` (POST /jobs), `batch` (POST /jobs/batch).
    modes: dict[str, Run]
    raw: Run | None
    load: tuple[float, float]  # 1-minute load average before and after the backend's runs

    def ratio(self, mode: str) -> float | None:
        run = self.modes.get(mode)
        if run is None or self.raw is None:
            return None
        return run.jobs_per_second / self.raw.jobs_per_second

    def cpu_ratio(self, mode: str) -> float | None:
        """Jobs per CPU second of `mode` over raw Celery's: the throughput ratio on a
        machine where the CPU is the limit, whatever else ran beside the benchmark."""
        run = self.modes.get(mode)
        if run is None or self.raw is None or not run.cpu or not self.raw.cpu:
            return None
        return self.raw.cpu_ms_per_job() / run.cpu_ms_per_job()


# --------------------------------------------------------------------------- processes


class Processes:
    """Subprocesses of this benchmark, each in its own process group, logs in a folder."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.running.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM the process group (Celery's pool children too), SIGKILL it if it lingers."""
        proc = self.running.pop(name)
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        _signal_group(proc, signal.SIGKILL)  # pool children that outlived their parent

    def cpu_seconds(self, name: str) -> float:
        """CPU seconds used so far by process `name` and its process group (Celery's pool
        children; those that exited and were reaped count through the leader's cutime)."""
        leader = self.running[name].pid
        ticks = 0
        for pid, fields in _proc_stats():
            if fields[2] == str(leader):  # the process group
                ticks += int(fields[11]) + int(fields[12])
                if pid == leader:
                    ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


class CpuMeter:
    """CPU seconds of a run's parts: this process (the client) until the last submit
    returned, the named server processes (with their pool children) and PostgreSQL's
    backends of `database` until the run ended. Redis is left out of both sides."""

    def __init__(self, processes: Processes, names: list[str], database: str | None = None) -> None:
        self.processes, self.names, self.database = processes, names, database
        self.start = self._servers()
        self.client = time.process_time()

    def _servers(self) -> dict[str, float]:
        used = {name: self.processes.cpu_seconds(name) for name in self.names}
        if self.database:
            used["postgres"] = postgres_cpu_seconds(self.database)
        return used

    def submitted(self) -> None:
        self.client = time.process_time() - self.client

    def done(self) -> dict[str, float]:
        end = self._servers()
        return {"client": self.client, **{k: end[k] - self.start[k] for k in end}}


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields after the command name) of every process: state, ppid, pgrp, ..."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:  # it exited meanwhile
                continue
            yield int(entry.name), text.rsplit(")", 1)[1].split()


def postgres_cpu_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to `database` (their titles name it)."""
    ticks = 0
    for pid, fields in _proc_stats():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres:") and f" {database} ".encode() in title:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    processes: Processes,
) -> None:
    """Poll `condition`; raise if a process died or `timeout` passed (with the logs' tails)."""
    deadline = time.monotonic() + timeout
    while not condition():
        processes.check_alive()
        if time.monotonic() > deadline:
            described = what if isinstance(what, str) else what()
            tails = "".join(f"\n--- {n} log:\n{processes.tail(n)}" for n in processes.running)
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {described}{tails}")
        time.sleep(POLL_SECONDS)


def submit_all(count: int, threads: int, submit_one: Callable[[int], Any]) -> tuple[float, float]:
    """Call submit_one(0..count-1) from `threads` threads; return (first submit, last return)."""
    pool = ThreadPoolExecutor(threads)
    try:
        started = time.time()
        list(pool.map(submit_one, range(count)))
        return started, time.time()
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl+C or an error: drop the unsent rest


# --------------------------------------------------------------------------- services


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        raise BenchError(f"Redis at {url} does not answer: {error}") from None


@contextlib.contextmanager
def flushed_redis(url: str) -> Iterator[None]:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its URL; drop it (even if still in use)."""
    name = f"submitter_bench_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        raise BenchError(f"PostgreSQL at {admin_url} does not answer: {error}") from None
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def sqlalchemy_url(url: str) -> str:
    """Plain postgresql:// means psycopg 3, as in Submitter's settings."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


# --------------------------------------------------------------------------- raw Celery


def run_raw(
    *,
    broker: str,
    sink_spec: str,
    args: argparse.Namespace,
    processes: Processes,
) -> Run:
    """`args.jobs` apply_async calls of the no-op task, run by a plain `celery worker`."""
    sink = raw.open_sink(sink_spec)
    sink.clear()
    env = clean_env(
        PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])),
        BENCH_RAW_BROKER=broker,
        BENCH_RAW_QUEUE=RAW_QUEUE,
        BENCH_RAW_SINK=sink_spec,
    )
    cmd = [sys.executable, "-m", "celery", "-A", "_raw_celery_app", "worker"]
    cmd += [f"--queues={RAW_QUEUE}", "--pool=prefork", f"--concurrency={args.workers_concurrency}"]
    cmd += ["--loglevel=WARNING", "--without-gossip", "--without-mingle", "--hostname=raw@%h"]
    processes.start("raw-worker", cmd, env)
    app = raw.make_app(broker, RAW_QUEUE)
    noop = app.tasks[raw.TASK_NAME]
    try:
        # Ready = it ran a few tasks (pool children forked, broker connection up).
        warmup = 2 * args.workers_concurrency
        for _ in range(warmup):
            noop.apply_async(args=[time.time()])
        wait_until(lambda: sink.count("done") >= warmup, START_TIMEOUT, "raw worker", processes)
        sink.clear()

        def submit_one(_: int) -> None:
            noop.apply_async(args=[time.time()])

        meter = CpuMeter(processes, ["raw-worker"])
        first, last = submit_all(args.jobs, args.concurrency, submit_one)
        meter.submitted()
        remaining = args.timeout - (time.time() - first)
        wait_until(
            lambda: sink.count("done") >= args.jobs,
            remaining,
            lambda: f"{args.jobs} raw Celery tasks to complete ({sink.count('done')} done)",
            processes,
        )
        return Run(
            jobs=args.jobs,
            submit_seconds=last - first,
            total_seconds=max(sink.values("done")) - first,
            latencies=sink.values("start"),
            cpu=meter.done(),
        )
    finally:
        processes.stop("raw-worker")
        app.close()


# --------------------------------------------------------------------------- Submitter


def run_submitter(
    *, env: dict[str, str], db_url: str, args: argparse.Namespace, processes: Processes
) -> dict[str, Run]:
    """`args.jobs` echo jobs per mode through the REST API, run by one `submitter worker`:
    `single` POSTs each to /api/v1/jobs from `args.concurrency` threads; `batch` POSTs
    chunks of `args.batch_size` to /api/v1/jobs/batch from as many threads."""
    submitter = [sys.executable, "-m", "submitter"]
    upgrade = subprocess.run(
        [*submitter, "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    if upgrade.returncode != 0:
        raise BenchError(f"submitter db upgrade failed:\n{upgrade.stdout}{upgrade.stderr}")
    processes.start("api", [*submitter, "api"], env)
    worker_cmd = [*submitter, "worker", f"--concurrency={args.workers_concurrency}"]
    processes.start("worker", worker_cmd, env)
    engine = create_engine(sqlalchemy_url(db_url))
    base_url = f"http://127.0.0.1:{env['SUBMITTER_API_PORT']}"
    headers = {"Authorization": f"Bearer {env['SUBMITTER_ADMIN_KEY']}"}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    runs: dict[str, Run] = {}
    try:
        with httpx.Client(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
            wait_until(lambda: _ready(http), START_TIMEOUT, f"{base_url}/ready", processes)

            def submit_one(n: int) -> list[str]:
                response = http.post("/api/v1/jobs", json=_echo(n))
                if response.status_code != 202:
                    raise BenchError(f"submit answered {response.status_code}: {response.text}")
                return [str(response.json()["id"])]

            size = args.batch_size

            def submit_chunk(chunk: int) -> list[str]:
                numbers = range(chunk * size, min(args.jobs, (chunk + 1) * size))
                response = http.post(
                    "/api/v1/jobs/batch", json={"jobs": [_echo(n) for n in numbers]}
                )
                if response.status_code != 202:
                    raise BenchError(f"batch answered {response.status_code}: {response.text}")
                return [str(job["id"]) for job in response.json()["items"]]

            # Ready = the worker ran a few jobs (pool children forked, DB and broker up).
            warmup = [submit_one(-1) for _ in range(2 * args.workers_concurrency)]
            done = len(warmup)
            wait_until(lambda: _finished(engine) >= done, START_TIMEOUT, "worker", processes)
            for mode in args.modes:
                submit, calls = (
                    (submit_one, args.jobs)
                    if mode == "single"
                    else (submit_chunk, -(-args.jobs // size))
                )
                log(f"  {mode}: {args.jobs} jobs in {calls} requests")
                runs[mode] = _timed_run(engine, submit, calls, done, args, processes)
                done += args.jobs
        return runs
    finally:
        processes.stop("worker")
        processes.stop("api")
        engine.dispose()


def _timed_run(
    engine: Engine,
    submit: Callable[[int], list[str]],
    calls: int,
    done_before: int,
    args: argparse.Namespace,
    processes: Processes,
) -> Run:
    """Make `calls` submissions from the client threads; wait until their jobs ended."""
    ids: list[str] = []
    meter = CpuMeter(processes, ["api", "worker"], database=engine.url.database)
    first, last = submit_all(calls, args.concurrency, lambda n: ids.extend(submit(n)))
    meter.submitted()
    target = done_before + len(ids)
    wait_until(
        lambda: _finished(engine) >= target,
        args.timeout - (time.time() - first),
        lambda: f"{len(ids)} Submitter jobs ({_finished(engine) - done_before} done)",
        processes,
    )
    run = _submitter_run(engine, ids, first, last)
    run.cpu = meter.done()
    return run


def _echo(n: int) -> dict[str, Any]:
    return {"kind": "echo", "spec": {"message": str(n)}}


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _finished(engine: Engine) -> int:
    """Jobs that succeeded; raise if any failed (they would never count)."""
    with engine.connect() as connection:
        counts = dict(connection.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    bad = {state: n for state, n in counts.items() if state in ("failed", "cancelled")}
    if bad:
        raise BenchError(f"jobs did not succeed: {bad}")
    return int(counts.get("succeeded", 0))


def _submitter_run(engine: Engine, ids: list[str], first: float, last: float) -> Run:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.created_at, Job.started_at, Job.finished_at).where(Job.id.in_(ids))
        ).all()
    return Run(
        jobs=len(rows),
        submit_seconds=last - first,
        total_seconds=max(row.finished_at.timestamp() for row in rows) - first,
        latencies=[(row.started_at - row.created_at).total_seconds() for row in rows],
    )


# --------------------------------------------------------------------------- backends


def bench_redis(args: argparse.Namespace, work: Path, processes: Processes) -> Row:
    postgres_url = os.environ.get("SUBMITTER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    redis_url = os.environ.get("SUBMITTER_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    check_redis(redis_url)
    load = os.getloadavg()[0]
    with bench_database(postgres_url) as db_url, flushed_redis(redis_url):
        log(f"redis: raw Celery, {args.jobs} tasks on {redis_url}")
        raw_run = run_raw(broker=redis_url, sink_spec=redis_url, args=args, processes=processes)
        log(f"redis: Submitter, {args.jobs} jobs, database {make_url(db_url).database}")
        env = submitter_env(
            work / "redis-home", SUBMITTER_DATABASE_URL=db_url, SUBMITTER_BROKER_URL=redis_url
        )
        runs = run_submitter(env=env, db_url=db_url, args=args, processes=processes)
    return Row("redis", runs, raw_run, (load, os.getloadavg()[0]))


def bench_embedded(args: argparse.Namespace, work: Path, processes: Processes) -> Row:
    home = work / "embedded-home"
    home.mkdir()
    load = os.getloadavg()[0]
    broker = f"sqla+sqlite:///{home / 'broker.db'}"  # the embedded default's broker
    log(f"embedded: raw Celery, {args.jobs} tasks on {broker}")
    raw_run = run_raw(
        broker=broker, sink_spec=str(work / "raw-embedded.records"), args=args, processes=processes
    )
    log(f"embedded: Submitter, {args.jobs} jobs in {home}")
    env = submitter_env(home)
    runs = run_submitter(
        env=env, db_url=f"sqlite:///{home / 'submitter.db'}", args=args, processes=processes
    )
    return Row("embedded", runs, raw_run, (load, os.getloadavg()[0]))


def submitter_env(home: Path, **settings: str) -> dict[str, str]:
    return clean_env(
        SUBMITTER_HOME=str(home),
        SUBMITTER_ADMIN_KEY="sk_bench_" + secrets.token_urlsafe(16),
        SUBMITTER_API_PORT=str(free_port()),
        SUBMITTER_LOG_LEVEL="WARNING",
        **settings,
    )


# --------------------------------------------------------------------------- report


def print_report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n{args.jobs} jobs per run, {args.concurrency} client threads, batches of "
        f"{args.batch_size}, worker --concurrency {args.workers_concurrency} (prefork)\n"
    )
    header = (
        f"{'backend':<9} {'run':<7} {'jobs/s':>8} {'x raw':>6} {'goal':>6}  {'':<7}  "
        f"{'p50/p99 submit→start ms':>23}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.raw is not None:
            raw = row.raw
            print(
                f"{row.backend:<9} {'raw':<7} {raw.jobs_per_second:>8.1f} {'':>6} {'':>6}  "
                f"{'':<7}  {_p50_p99(raw):>23}"
            )
        for mode, run in row.modes.items():
            ratio = row.ratio(mode)
            goal = GOALS[mode]
            verdict = _verdict(row.backend, ratio, goal)
            print(
                f"{row.backend:<9} {mode:<7} {run.jobs_per_second:>8.1f} {_fmt(ratio, '.2f'):>6} "
                f"{'>= ' + format(goal, '.1f'):>6}  {verdict:<7}  {_p50_p99(run):>23}"
            )
    _print_medians(rows)
    print(
        "\nCPU ms per job (client = this process while submitting; Redis not counted; "
        "x raw = jobs per CPU second over raw Celery's)"
    )
    for row in rows:
        for side, run in [("raw", row.raw), *row.modes.items()]:
            if run is None or not run.cpu:
                continue
            parts = "  ".join(f"{part} {run.cpu_ms_per_job(part):5.2f}" for part in run.cpu)
            ratio = "" if side == "raw" else f"  x raw {_fmt(row.cpu_ratio(side), '.2f')}"
            print(
                f"  {row.backend:<9} {side:<7} total {run.cpu_ms_per_job():5.2f}  ({parts}){ratio}"
            )
    print("\nphases (s): submit = first to last submit returned; total = first submit to last end")
    for row in rows:
        sides = [*row.modes.items(), ("raw", row.raw)]
        for side, run in sides:
            if run is not None:
                print(
                    f"  {row.backend:<9} {side:<7} submit {run.submit_seconds:6.2f}  "
                    f"total {run.total_seconds:6.2f}  ({run.jobs} jobs)"
                )
        print(
            f"  {row.backend:<9} load average (1 min) {row.load[0]:.2f} before, "
            f"{row.load[1]:.2f} after ({os.cpu_count()} cores)"
        )


def _print_medians(rows: list[Row]) -> None:
    """With several pairs per backend: the median ratio per mode, which the goals judge."""
    pairs_of = Counter(row.backend for row in rows)
    if max(pairs_of.values(), default=0) < 2:
        return
    print("\nmedian of the pairs' ratios (the goals are judged on it; range in brackets)")
    for backend in pairs_of:
        pairs = [row for row in rows if row.backend == backend]
        for mode in GOALS:
            ratios = [r for r in (row.ratio(mode) for row in pairs) if r is not None]
            if not ratios:
                continue
            median = statistics.median(ratios)
            verdict = _verdict(backend, median, GOALS[mode])
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs"
            print(
                f"  {backend:<9} {mode:<7} x raw {median:.2f} ({spread})  "
                f"goal >= {GOALS[mode]:.1f}  {verdict}"
            )


def _verdict(backend: str, ratio: float | None, goal: float) -> str:
    """met / NOT MET; "-" off PostgreSQL + Redis, where the goals are not set (the ratio
    is for reading) or without a ratio."""
    if ratio is None or backend != "redis":
        return "-"
    return "met" if ratio >= goal else "NOT MET"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _p50_p99(run: Run | None) -> str:
    return "-" if run is None else f"{run.latency_ms(50):.0f} / {run.latency_ms(99):.0f}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--workers-concurrency", type=int, default=2, help="worker pool size")
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument(
        "--batch-size", type=int, default=100, help="jobs per POST /jobs/batch (max 1000)"
    )
    parser.add_argument(
        "--modes",
        type=lambda text: [m for m in text.split(",") if m],
        default=["single", "batch"],
        help="Submitter runs, comma-separated: single,batch",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs (raw + Submitter) per backend; median"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C (even when started with SIGINT ignored, as `cmd &` does) and SIGTERM unwind, so
    # the finally blocks stop the servers, flush Redis and drop the database.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    backends = ["redis", "embedded"] if args.backend == "both" else [args.backend]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="submitter-bench-") as tmp:
        work = Path(tmp)
        processes = Processes(work)
        try:
            for backend in backends:
                bench = bench_redis if backend == "redis" else bench_embedded
                for pair in range(args.repeat):
                    folder = work / f"{backend}-{pair}"
                    folder.mkdir()
                    rows.append(bench(args, folder, processes))
        except BenchError as error:
            log(f"FAILED: {error}")
            return 1
        except KeyboardInterrupt:
            log("interrupted; stopping servers and cleaning up")
            return 130
        finally:
            processes.stop_all()
            if rows:
                print_report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
