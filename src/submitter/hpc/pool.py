"""One live connection per cluster per process, reused by every job and every poll.

Opening an SSH session costs a TCP and a key exchange (and, on many sites, counts against a
rate limit on the login node); a monitor that polls hundreds of jobs must not pay it per job.
The pool hands out the process's connection to a cluster and reopens it when it died. The
counters are what `bench/hpc_monitor.py` reports.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence

from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.transport import ClusterUnreachable, CommandResult, Transport, connect

logger = logging.getLogger(__name__)


class ClusterPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, Transport] = {}
        #: per cluster name: connections opened and commands run (by program name)
        self.connections_opened: Counter[str] = Counter()
        self.commands: Counter[tuple[str, str]] = Counter()

    def get(self, cluster: ClusterConfig) -> Transport:
        with self._lock:
            transport = self._connections.get(cluster.name)
            if transport is not None and transport.cluster == cluster and transport.is_alive():
                return transport
            if transport is not None:
                transport.close()
            transport = connect(cluster)
            self.connections_opened[cluster.name] += 1
            self._connections[cluster.name] = transport
            return transport

    def run(
        self,
        cluster: ClusterConfig,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
        retry: bool = True,
    ) -> CommandResult:
        """Run a command on the cluster; retry once on a fresh connection if it dropped.

        `retry=False` for commands that must not run twice (sbatch): a connection that died
        after the command started may have run it.
        """
        self.commands[(cluster.name, argv[0])] += 1
        try:
            return self.get(cluster).run(argv, timeout=timeout, stdin=stdin)
        except ClusterUnreachable:
            self.discard(cluster)
            if not retry:
                raise
            return self.get(cluster).run(argv, timeout=timeout, stdin=stdin)

    def discard(self, cluster: ClusterConfig) -> None:
        with self._lock:
            transport = self._connections.pop(cluster.name, None)
        if transport is not None:
            transport.close()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connections without touching their sockets."""
        self._lock = threading.Lock()
        self._connections = {}

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, {}
        for transport in connections.values():
            transport.close()


#: The process's pool. Celery prefork children each get their own after fork (the parent
#: never connects), which is what paramiko needs: its sockets must not be shared over fork.
POOL = ClusterPool()
os.register_at_fork(after_in_child=POOL.forget_after_fork)
