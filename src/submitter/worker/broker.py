"""Questions asked of the broker directly: is it reachable, how deep are the queues."""

from __future__ import annotations

from celery import Celery

from submitter.worker.app import QUEUES


def check_broker(celery: Celery, timeout: float = 3.0) -> None:
    """Raise if the broker cannot be reached within `timeout` seconds."""
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)


def queue_depths(celery: Celery, timeout: float = 3.0) -> dict[str, int]:
    """Messages waiting in each Submitter queue (not counting those a worker holds)."""
    depths: dict[str, int] = {}
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        channel = connection.default_channel
        for name in QUEUES:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except Exception:  # queue not declared yet: nothing waits in it
                depths[name] = 0
                channel = connection.channel()
    return depths
