"""Decompression bomb: a small Parquet file holding one huge cell, against a real API.

What it measures:

- **Upload**: `--cell-mib` MiB of one repeated byte in one cell (zstd: a 1 GiB cell is a
  file of about 33 KB) uploaded to a fresh `submitter api` on the embedded default (SQLite,
  local folder) in a temp `SUBMITTER_HOME`: the status, the answer, and the API process's
  peak RSS (`VmHWM`) before and after.
- **Preview**: when the upload was accepted, `GET /preview?limit=1`: status, body bytes,
  and the API's peak RSS after it.
- **Reader**: a fresh Python process reads the file column by column as the `describe` job
  does, through `BoundedParquetFile` when it exists (pyarrow's `ParquetFile` otherwise),
  with default limits; its peak RSS and what it answered.

`--src PATH` runs the API and the reader with `PYTHONPATH=PATH` (e.g. the `src/` of a
worktree of an older commit), to get the figures before a fix:

    git worktree add /tmp/before <commit> && \\
    .venv/bin/python bench/dataset_bomb.py --src /tmp/before/src

Run from the repository root (Linux only: it reads /proc):

    .venv/bin/python bench/dataset_bomb.py [--cell-mib 1024] [--src PATH]

Writing the bomb needs about three times `--cell-mib` in this process (once, cached in the
temp folder for the run). Exit status 0 when every step ran, whatever the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, clean_env, free_port, log, signal_group

MB = 10**6


def vm_hwm(pid: int) -> int:
    """Peak resident set size of `pid` in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def make_bomb(path: Path, cell_mib: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cell = "A" * (cell_mib << 20)
    table = pa.table({"x": pa.array([cell], pa.large_string()), "n": [1]})
    del cell
    pq.write_table(table, path, compression="zstd")


READER = textwrap.dedent(
    """
    import sys
    import pyarrow.parquet as pq
    try:
        from submitter.datasets.limits import BoundedParquetFile, DatasetLimits
        parquet = BoundedParquetFile(sys.argv[1], limits=DatasetLimits())
    except ImportError:
        parquet = pq.ParquetFile(sys.argv[1])
    try:
        for name in parquet.schema_arrow.names:
            parquet.read(columns=[name])
        answer = "read"
    except Exception as error:
        answer = f"{type(error).__name__}: {error}"
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) * 1024, answer[:300])
    """
)


def run(cell_mib: int, src: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-bomb-") as tmp:
        home = Path(tmp)
        bomb = home / "bomb.parquet"
        log(f"writing a {cell_mib} MiB cell")
        make_bomb(bomb, cell_mib)
        log(f"bomb: {bomb.stat().st_size} bytes on disk")
        extra = {"PYTHONPATH": src} if src else {}
        key = "sk_bench_bomb_admin_key"
        port = free_port()
        env = clean_env(
            SUBMITTER_HOME=str(home / "home"),
            SUBMITTER_ADMIN_KEY=key,
            SUBMITTER_API_PORT=str(port),
            SUBMITTER_LOG_FORMAT="json",
            **extra,
        )
        with (home / "api.log").open("wb") as api_log:
            api = subprocess.Popen(
                [sys.executable, "-m", "submitter", "api"],
                env=env,
                stdout=api_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if api.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the API did not start: " + (home / "api.log").read_text())
                time.sleep(0.2)
            started = vm_hwm(api.pid)
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
                with bomb.open("rb") as file:
                    response = client.post(
                        "/api/v1/datasets",
                        data={"name": "bomb"},
                        files={"file": ("bomb.parquet", file)},
                    )
                uploaded = vm_hwm(api.pid)
                print(f"API peak RSS at start:     {started / MB:8.0f} MB")
                print(f"upload: {response.status_code} {response.text[:300]}")
                print(f"API peak RSS after upload: {uploaded / MB:8.0f} MB")
                if response.status_code in (200, 201):
                    preview = client.get("/api/v1/datasets/bomb/preview", params={"limit": 1})
                    print(f"preview: {preview.status_code}, {len(preview.content)} bytes")
                    print(f"API peak RSS after preview: {vm_hwm(api.pid) / MB:7.0f} MB")
        finally:
            signal_group(api, 15)
            api.wait(30)
        reader = subprocess.run(
            [sys.executable, "-c", READER, str(bomb)],
            env=clean_env(**extra),
            capture_output=True,
            text=True,
            check=False,
        )
        if reader.returncode != 0:
            raise BenchError(f"the reader failed: {reader.stderr[-2000:]}")
        peak, _, answer = reader.stdout.strip().partition(" ")
        print(f"describe-like reader: peak RSS {int(peak) / MB:.0f} MB; {answer}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell-mib", type=int, default=1024)
    parser.add_argument("--src", help="PYTHONPATH for the API and the reader (older code)")
    args = parser.parse_args()
    try:
        run(args.cell_mib, args.src and os.path.abspath(args.src))
    except BenchError as error:
        log(str(error))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
