"""The venv lock, the batch wrapper and the quoting of user values, run by a real bash.

No SLURM needed: the wrapper is an ordinary bash script and the venv script uses flock and
`python -m venv` as they run on a login node (LocalTransport = this host).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from submitter.hpc.clusters import ClusterConfig
from submitter.hpc.environment import batch_wrapper, create_venv_argv
from submitter.hpc.transport import LocalTransport
from submitter.usercode.venv import READY_MARK, venv_path

HOSTILE = [
    "; rm -rf ~",
    "$(touch {sentinel})",
    "`touch {sentinel}`",
    'it\'s "quoted"',
    "line one\nline two",
    "$HOME and ${{PATH}} and \\ backslash",
]


def _cluster(tmp_path: Path, **extra: object) -> ClusterConfig:
    return ClusterConfig(
        name="here", transport="local", workdir=str(tmp_path), python=sys.executable, **extra
    )


def test_concurrent_jobs_create_one_venv_and_the_other_waits(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    path = venv_path(
        str(tmp_path), "tools", [], system_site_packages=True, python=cluster.python, modules=[]
    )
    argv = create_venv_argv(cluster, path, [], system_site_packages=True, modules=[])
    transport = LocalTransport(cluster)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: transport.run(argv), range(2)))
    assert all(r.ok for r in results), [r.stderr for r in results]
    assert sorted(r.stdout.strip() for r in results) == ["created", "reused"]
    assert any("waiting" in r.stderr for r in results)
    assert (Path(path) / READY_MARK).is_file()
    # A later job reuses it without waiting.
    again = transport.run(argv)
    assert again.stdout.strip() == "reused" and "waiting" not in again.stderr


def test_venv_key_depends_on_sorted_packages() -> None:
    def key(packages: list[str]) -> str:
        return venv_path("/w", "v", packages, system_site_packages=False, python="p", modules=[])

    assert key(["b", "a"]) == key(["a", "b"])
    assert key(["a"]) != key(["a", "c"])


def test_hostile_package_reaches_pip_as_one_argument(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    cluster = _cluster(tmp_path)
    package = f"x; touch {sentinel} $(touch {sentinel})"
    path = f"{tmp_path}/venvs/bad"
    argv = create_venv_argv(cluster, path, [package], system_site_packages=True, modules=[])
    result = LocalTransport(cluster).run(argv)
    assert result.returncode == 4  # pip refused the requirement; nothing else ran
    assert not sentinel.exists()
    assert not Path(path).exists()  # a failed venv is removed, not left half-made


def _run_wrapper(
    tmp_path: Path, folder: Path, script_text: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Write the user script and Submitter's wrapper into `folder`, run it as sbatch would."""
    control = folder / ".submitter"
    control.mkdir(parents=True)
    script = control / "script"
    script.write_text(script_text)
    wrapper = control / "job.sbatch"
    wrapper.write_text(
        batch_wrapper(
            _cluster(tmp_path),
            job_id="j1",
            folder=str(folder),
            script=str(script),
            modules=[],
            venv=None,
            env=env,
            times_file=str(control / "times"),
        )
    )
    return subprocess.run(["bash", str(wrapper)], capture_output=True, text=True, check=False)


def test_wrapper_passes_hostile_environment_values_verbatim(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    values = {f"V{i}": v.format(sentinel=sentinel) for i, v in enumerate(HOSTILE)}
    folder = tmp_path / "job dir; $(x)"
    script = (
        f"#!{sys.executable}\nimport os, json\n"
        "print(json.dumps({k: os.environ[k] for k in sorted(os.environ) if k.startswith('V')}))\n"
    )
    done = _run_wrapper(tmp_path, folder, script, values)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == values
    assert not sentinel.exists()
    assert (folder / ".submitter" / "times").read_text().count("m") >= 4  # CPU time kept


def test_wrapper_keeps_the_script_exit_code(tmp_path: Path) -> None:
    # No shebang: the script runs with bash.
    done = _run_wrapper(tmp_path, tmp_path / "job", "echo failing\nexit 7\n", {})
    assert done.returncode == 7 and done.stdout.strip() == "failing"
