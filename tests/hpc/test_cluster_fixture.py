"""Smoke tests of the SLURM test cluster itself: real SSH, sbatch, the module shim, sacct."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.hpc_cluster import TestCluster

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def ssh(cluster: TestCluster, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cluster.ssh_argv(command, **kw),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(cluster: TestCluster, command: str) -> str:
    done = ssh(cluster, command)
    assert done.returncode == 0, f"{command!r} exited with {done.returncode}: {done.stderr}"
    return done.stdout


def submit(cluster: TestCluster, wrap: str, *options: str) -> str:
    out = ok(
        cluster,
        f"cd {shlex.quote(cluster.workdir)} && sbatch --parsable --output=smoke-%j.out "
        f"{' '.join(options)} --wrap {shlex.quote(wrap)}",
    )
    job_id = out.strip().split(";")[0]
    assert job_id.isdigit(), out
    return job_id


def wait_for_job(cluster: TestCluster, job_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        fields = dict(
            item.split("=", 1)
            for item in ok(cluster, f"scontrol show job -o {job_id}").split()
            if "=" in item
        )
        state = fields.get("JobState", "")
        if state in TERMINAL:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {state} after {timeout:.0f} s")


def test_sbatch_over_ssh_runs_a_job(slurm_cluster: TestCluster) -> None:
    job_id = submit(slurm_cluster, "echo hi", "--job-name=smoke")
    assert wait_for_job(slurm_cluster, job_id) == "COMPLETED"
    assert ok(slurm_cluster, f"cat {slurm_cluster.workdir}/smoke-{job_id}.out") == "hi\n"
    queue = ok(slurm_cluster, "squeue -h -o '%i|%T' --me --states=all")
    assert f"{job_id}|COMPLETED" in queue.splitlines()


def test_module_shim(slurm_cluster: TestCluster) -> None:
    setup = "; ".join(slurm_cluster.setup)
    out = ok(
        slurm_cluster,
        f"{setup}; module load {slurm_cluster.module_name} && testenv-hello && "
        'echo "$SUBMITTER_TEST_MODULE" && module list',
    )
    assert out.splitlines()[:2] == ["hello from testenv", "testenv-1.0"]
    assert slurm_cluster.module_name in out.splitlines()[-1]
    assert slurm_cluster.module_name in ok(slurm_cluster, f"{setup}; module avail").split()
    unknown = ssh(slurm_cluster, f"{setup}; module load nosuch/9.9")
    assert unknown.returncode == 1
    assert '"nosuch/9.9"' in unknown.stderr


def test_host_keys_are_checked(slurm_cluster: TestCluster) -> None:
    assert ok(slurm_cluster, "whoami").strip() == slurm_cluster.user
    for known_hosts in (slurm_cluster.wrong_known_hosts, slurm_cluster.empty_known_hosts):
        refused = ssh(slurm_cluster, "true", known_hosts=known_hosts)
        assert refused.returncode == 255
        assert "Host key verification failed" in refused.stderr


def test_passphrase_key(slurm_cluster: TestCluster) -> None:
    def public(passphrase: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh-keygen", "-y", "-P", passphrase, "-f", str(slurm_cluster.passphrase_key_file)],
            capture_output=True,
            text=True,
            check=False,
        )

    assert public("").returncode != 0  # protected
    key = public(slurm_cluster.passphrase).stdout.split()[:2]
    authorized = (slurm_cluster.tmpdir / "authorized_keys" / slurm_cluster.user).read_text()
    assert " ".join(key) in authorized


def test_python_venv_as_user(slurm_cluster: TestCluster) -> None:
    venv = f"{slurm_cluster.workdir}/smoke-venv"
    out = ok(slurm_cluster, f"python3 -m venv {venv} && {venv}/bin/python -c 'print(42)'")
    assert out == "42\n"


def test_local_config(slurm_cluster: TestCluster) -> None:
    entry = slurm_cluster.config("here", "local", partition="other")
    assert entry == {
        "name": "here",
        "transport": "local",
        "workdir": slurm_cluster.local_workdir,
        "setup": slurm_cluster.setup,
        "partition": "other",
    }
    assert Path(entry["workdir"]).is_dir()
    assert slurm_cluster.config()["port"] == slurm_cluster.ssh_port


def test_sacct_shows_a_finished_job(slurm_cluster: TestCluster) -> None:
    if not slurm_cluster.accounting:
        pytest.skip("the test cluster runs without slurmdbd")
    job_id = submit(slurm_cluster, "echo accounted", "--job-name=smoke-sacct")
    assert wait_for_job(slurm_cluster, job_id) == "COMPLETED"
    fields = "JobID,State,ExitCode,Elapsed,TotalCPU,MaxRSS,NNodes,AllocCPUS,ReqMem"
    deadline = time.monotonic() + 30
    while True:
        rows = ok(slurm_cluster, f"sacct -P -n -j {job_id} --format={fields}").splitlines()
        main = [row.split("|") for row in rows if row.split("|")[0] == job_id]
        if (main and main[0][1] == "COMPLETED") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert main and main[0][1:3] == ["COMPLETED", "0:0"], rows
    assert f"{job_id}.batch" in [row.split("|")[0] for row in rows]


def test_jobcomp_log(slurm_cluster: TestCluster) -> None:
    job_id = submit(slurm_cluster, "true", "--job-name=smoke-jobcomp")
    assert wait_for_job(slurm_cluster, job_id) == "COMPLETED"
    deadline = time.monotonic() + 10
    while f"JobId={job_id} " not in slurm_cluster.jobcomp_log.read_text():
        assert time.monotonic() < deadline, slurm_cluster.jobcomp_log.read_text()
        time.sleep(0.2)
