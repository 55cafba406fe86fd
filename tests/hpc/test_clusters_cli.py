"""`submitter clusters list|check` as a user runs them, against a real `submitter api` whose
configuration (a YAML file, as in production) names the test cluster."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.test_cli import _free_port, _wait_ready, run
from tests.conftest import Process, make_backend
from tests.hpc_cluster import TestCluster


def test_clusters_list_and_check_from_a_yaml_config(
    slurm_cluster: TestCluster, tmp_path: Path
) -> None:
    config = tmp_path / "submitter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    slurm_cluster.config("mini"),
                    slurm_cluster.config(
                        "impostor", known_hosts=str(slurm_cluster.wrong_known_hosts)
                    ),
                ]
            }
        )
    )
    with make_backend("embedded", tmp_path) as backend:
        port = _free_port()
        backend.env.update(SUBMITTER_API_PORT=str(port), SUBMITTER_CONFIG=str(config))
        api = Process(backend, "api")
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url)
            client = {"SUBMITTER_URL": url, "SUBMITTER_API_KEY": backend.admin_key}

            listed = run(client, "clusters", "list")
            assert listed.returncode == 0, listed.stderr
            assert "mini" in listed.stdout and "submitter-hpc@127.0.0.1" in listed.stdout
            assert str(slurm_cluster.key_file) not in listed.stdout

            checked = run(client, "clusters", "check", "mini")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert "slurm 22" in checked.stdout or "slurm" in checked.stdout
            assert "debug" in checked.stdout and "python" in checked.stdout.lower()

            refused = run(client, "clusters", "check", "impostor")
            assert refused.returncode == 1
            assert "does not match" in refused.stdout + refused.stderr
        finally:
            api.stop()
