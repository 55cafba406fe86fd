"""`submitter clusters check`: can we reach a cluster, and what does it offer?"""

from __future__ import annotations

from typing import Any

from submitter.hpc.accounting import AccountingLookup
from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.pool import ClusterPool

PARTITION_FORMAT = "%P|%a|%D|%c|%m|%l"


def check_cluster(cluster: ClusterConfig) -> dict[str, Any]:
    """Connect (own pool: a fresh connection proves the settings) and ask SLURM and Python."""
    pool = ClusterPool()
    try:
        version = pool.run(cluster, ["sinfo", "--version"]).check().stdout.strip()
        listing = pool.run(cluster, ["sinfo", "--noheader", f"--format={PARTITION_FORMAT}"])
        partitions = []
        for line in listing.check().stdout.splitlines():
            name, available, nodes, cpus, memory, limit = (line.split("|") + [""] * 6)[:6]
            partitions.append(
                {
                    "name": name.rstrip("*"),
                    "default": name.endswith("*"),
                    "available": available,
                    "nodes": nodes,
                    "cpus_per_node": cpus,
                    "memory_mb_per_node": memory,
                    "time_limit": limit,
                }
            )
        python = pool.run(
            cluster, [cluster.python, "-c", "import sys; print(sys.executable, sys.version)"]
        )
        transport = pool.get(cluster)
        return {
            "cluster": cluster.name,
            "ok": True,
            "slurm_version": version,
            "partitions": partitions,
            "python": python.stdout.strip() if python.ok else None,
            "python_error": None if python.ok else python.stderr.strip()[-500:],
            "accounting": "sacct" if AccountingLookup(pool).has_sacct(cluster) else "scontrol",
            "workdir": transport.expand(cluster.workdir),
        }
    finally:
        pool.close()
