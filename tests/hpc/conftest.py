"""The SLURM test cluster (tests/hpc_cluster.py) as a session fixture."""

from __future__ import annotations

import pytest

from tests import hpc_cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> hpc_cluster.TestCluster:
    """A real single-node SLURM cluster reached over a private sshd (started once per process)."""
    return hpc_cluster.slurm_cluster()
