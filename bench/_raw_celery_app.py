"""The raw-Celery baseline of `bench/dispatch.py`: a no-op task that records when it ran.

The app is configured like Submitter's own Celery app (JSON, late acks, reject on worker
loss, prefetch 1, no result backend, the same visibility timeout), so the gap that the
benchmark measures is Submitter's own work per job, not a different Celery setup.

- The benchmark process calls `make_app(broker, queue)` and sends `noop(sent_at)` with
  `apply_async`.
- The worker is started as `celery -A _raw_celery_app worker ...` with this folder on
  PYTHONPATH; it gets the module's `app`, built from `BENCH_RAW_BROKER` and `BENCH_RAW_QUEUE`.
- Each run of the task appends two records to the sink named by `BENCH_RAW_SINK` (a Redis URL
  or a file path): `start` = its start time minus `sent_at`, then `done` = its end time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from celery import Celery
from kombu import Exchange, Queue

TASK_NAME = "bench.noop"
REDIS_KEY = "bench:raw"
VISIBILITY_TIMEOUT = 24 * 3600  # Submitter's default `visibility_timeout_seconds`


class RedisSink:
    """Records in two Redis lists, `bench:raw:start` and `bench:raw:done`."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def record(self, kind: str, value: float) -> None:
        self.client.rpush(f"{REDIS_KEY}:{kind}", repr(value))

    def count(self, kind: str) -> int:
        return int(self.client.llen(f"{REDIS_KEY}:{kind}"))

    def values(self, kind: str) -> list[float]:
        return [float(v) for v in self.client.lrange(f"{REDIS_KEY}:{kind}", 0, -1)]

    def clear(self) -> None:
        self.client.delete(f"{REDIS_KEY}:start", f"{REDIS_KEY}:done")


class FileSink:
    """Records as lines `<kind> <value>` in one file; small appends are atomic on POSIX."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def record(self, kind: str, value: float) -> None:
        with self.path.open("a") as handle:
            handle.write(f"{kind} {value!r}\n")

    def _lines(self, kind: str) -> list[str]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text().splitlines() if line.startswith(kind)]

    def count(self, kind: str) -> int:
        return len(self._lines(kind))

    def values(self, kind: str) -> list[float]:
        return [float(line.split()[1]) for line in self._lines(kind)]

    def clear(self) -> None:
        self.path.write_text("")


Sink = RedisSink | FileSink


def open_sink(spec: str) -> Sink:
    return RedisSink(spec) if spec.startswith(("redis://", "rediss://")) else FileSink(spec)


_process_sink: Sink | None = None


def _sink() -> Sink:
    """This process's sink, opened on first use (so after the prefork pool forked)."""
    global _process_sink
    if _process_sink is None:
        _process_sink = open_sink(os.environ["BENCH_RAW_SINK"])
    return _process_sink


def make_app(broker: str, queue: str) -> Celery:
    app = Celery("bench_raw", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        broker_transport_options=(
            {} if broker.startswith("sqla+") else {"visibility_timeout": VISIBILITY_TIMEOUT}
        ),
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_queues=[Queue(queue, Exchange(queue), routing_key=queue)],
    )

    @app.task(name=TASK_NAME, ignore_result=True, shared=False)
    def noop(sent_at: float) -> None:
        sink = _sink()
        sink.record("start", time.time() - sent_at)
        sink.record("done", time.time())

    return app


# The worker's app (`celery -A _raw_celery_app worker`); creating it connects to nothing.
app = make_app(
    os.environ.get("BENCH_RAW_BROKER", "redis://127.0.0.1:6379/14"),
    os.environ.get("BENCH_RAW_QUEUE", "bench_raw"),
)
