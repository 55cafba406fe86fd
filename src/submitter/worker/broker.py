"""Questions asked of the broker directly: is it reachable, how deep are the queues."""

from __future__ import annotations

from celery import Celery

from submitter.worker.app import QUEUES


def check_broker(celery: Celery, timeout: float = 3.0) -> None:
    """Raise if the broker cannot be reached within about `timeout` seconds.

    Its own connection with its own timeouts: the app's Redis transport has no socket
    timeout, so a Redis that accepts the TCP connection but never answers (stopped with
    SIGSTOP, a full backlog, a black-holing proxy) made this check - and /ready - wait
    forever. AMQP is bounded by the connect timeout, which covers its handshake; the
    embedded SQLite broker is a local file.
    """
    redis = str(celery.conf.broker_url or "").split(":", 1)[0] in {"redis", "rediss"}
    options = dict(celery.conf.broker_transport_options or {})
    if redis:  # (kombu's SQLAlchemy transport hands every option to create_engine)
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    with celery.connection_for_write(
        connect_timeout=timeout, transport_options=options
    ) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        if redis:  # opening the socket is not an answer; a PING is
            connection.default_channel.client.ping()


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
