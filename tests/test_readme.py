"""The README's examples, run as a new user runs them: in order, as written, in a clone on a
fresh `submitter up`.

Blocks marked `<!-- run in order by tests/test_readme.py ... -->` are run; bash blocks in one
shell (so `export` and variables carry over, `set -euo pipefail`: any failing line fails the
test), Python blocks with the clone's interpreter. The clone is a temporary folder holding
`.venv/bin/{submitter,python}` (this interpreter) and `tests/data` (the repository's); the
only change to the text is the port, so that a stack on :7500 elsewhere is not touched.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- run in order by tests/test_readme.py"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def runnable_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, code) of each marked block, in order."""
    blocks = []
    for part in readme.split(MARKER)[1:]:
        found = BLOCK.search(part)
        assert found is not None and part.index("```") == found.start(), "marker without block"
        blocks.append((found.group(1), found.group(2)))
    return blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clone(folder: Path) -> None:
    """What a clone with its venv looks like, as far as the examples can tell."""
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    # Scripts, not symlinks: a symlinked venv interpreter outside its venv loses the venv.
    for name, command in (("python", ""), ("submitter", " -m submitter")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        shim.chmod(0o755)
    (folder / "tests").mkdir()
    (folder / "tests" / "data").symlink_to(REPO / "tests" / "data")


def test_readme_examples_run_in_order_on_a_fresh_stack(tmp_path: Path) -> None:
    blocks = runnable_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 5, "the README lost its runnable examples"
    _clone(tmp_path)
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITTER_")}
    env.update({"SUBMITTER_API_PORT": port, "COLUMNS": "100", "SUBMITTER_LOG_FORMAT": "json"})
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [str(tmp_path / ".venv/bin/submitter"), "up", "--concurrency=2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, up, tmp_path / "up.log")
        bash = "\n".join(code for language, code in blocks if language == "bash")
        script = "set -euo pipefail\n" + bash.replace("127.0.0.1:7500", f"127.0.0.1:{port}")
        ran = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ran.returncode == 0, _failure("bash", ran, tmp_path)
        env["SUBMITTER_URL"] = url
        for language, code in blocks:
            if language != "python":
                continue
            ran = subprocess.run(
                [str(tmp_path / ".venv/bin/python"), "-"],
                input=code,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert ran.returncode == 0, _failure("python", ran, tmp_path)
        # Every job the examples made ended, and none failed.
        key = (tmp_path / ".submitter" / "admin.key").read_text().strip()
        jobs = httpx.get(
            f"{url}/api/v1/jobs",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["items"]
        failed = [j for j in jobs if j["state"] == "failed"]
        assert not failed, failed
    finally:
        up.terminate()
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, 9)
        log.close()


def _wait_ready(url: str, up: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert up.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"submitter up not ready in 90 s:\n{log.read_text()[-3000:]}")


def _failure(what: str, ran: subprocess.CompletedProcess[str], folder: Path) -> str:
    up_log = (folder / "up.log").read_text(errors="replace")[-3000:]
    output = f"{ran.stdout[-4000:]}\n{ran.stderr[-4000:]}"
    return f"{what} examples failed ({ran.returncode}):\n{output}\n--- up:\n{up_log}"
