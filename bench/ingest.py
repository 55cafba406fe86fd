"""Ingest benchmark: a large CSV uploaded through the API, against pyarrow in one process.

What it measures:

- **Upload** (Submitter): a generated CSV (`--rows` rows, 11 columns of ints, floats with
  empty cells, dates, booleans, categories and short free text with quoted commas; about
  110 bytes a row, so ~110 MB for the default million rows) is uploaded with
  `Client.upload_dataset` (httpx streaming multipart) to `submitter api` running on the
  embedded default (SQLite, local folder store) in a temp `SUBMITTER_HOME`. The request
  returns once the CSV has been received, hashed, converted to Parquet and stored, so
  throughput = CSV bytes / (request sent → response received), the keep-alive connection
  already open. Peak RSS = `VmHWM` of the API process after the upload (it is a fresh
  process: that covers its start-up and the upload); its RSS just before the upload, and
  when in the upload a 20 ms VmRSS sampler saw the peak, are shown too.
- **Baseline**: a fresh Python process runs `pyarrow.csv.read_csv(path)` +
  `pyarrow.parquet.write_table(table, out)` (pyarrow's defaults: multi-threaded read,
  snappy) on the same file; its wall time (imports excluded) and its peak RSS
  (`ru_maxrss`, imports included).
- **Aggregates**: `--aggregates` `Client.aggregate` calls on the uploaded dataset, in turn:
  mean of a float column with one equality filter, count grouped by a category column, sum
  of an int column with two filters; p50 and p99 latency (client side, one connection).

Goals (from the issue): API peak RSS < 400 MB; throughput >= 0.5x the baseline; aggregate
p50 < 0.5 s. MB here is 10^6 bytes, for sizes and memory alike.

Run from the repository root:

    .venv/bin/python bench/ingest.py [--rows 1000000] [--aggregates 20] [--keep-file PATH]

The CSV is deterministic for a given `--rows` and pyarrow version (seeded `pc.random`).
Exit status 0 when every step ran (whatever the figures), 1 when something failed, 130 on
Ctrl+C; the API process and the temp files are removed on exit (the CSV stays only with
`--keep-file`). Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from _common import BenchError, clean_env, free_port, log, percentile
from _common import signal_group as _signal_group

from submitter.client import ApiError, Client

GOAL_PEAK_RSS_MB = 400.0
GOAL_THROUGHPUT_RATIO = 0.5
GOAL_AGGREGATE_P50_S = 0.5
MB = 1_000_000
SEED = 20_240_601
CHUNK_ROWS = 100_000
START_TIMEOUT = 60.0
STEP_TIMEOUT = 900.0
DATASET_NAME = "bench-ingest"


# --------------------------------------------------------------------------- the CSV

CATEGORIES = (
    "electronics",
    "groceries",
    "clothing",
    "books",
    "toys",
    "garden",
    "sports",
    "beauty",
    "automotive",
    "music",
    "office",
    "health",
)
_COUNTRIES_TEXT = "DE FR US GB IT ES NL BE PL SE NO DK FI AT CH PT IE CZ JP CA"
COUNTRIES = tuple(_COUNTRIES_TEXT.split())
_WORDS_TEXT = (
    "fast cheap late early broken fine great poor blue red small large gift box return refund "
    "repeat customer happy order delivery damaged missing extra quality price service support "
    "fresh new used again never always please call email warehouse courier weekend morning "
    "evening discount coupon item parcel"
)
WORDS = tuple(_WORDS_TEXT.split())
HEADER = (
    "order_id,customer_id,amount,discount,quantity,category,country,is_member,order_date,tag,note"
)
FIRST_DAY = dt.date(2015, 1, 1)
LAST_DAY = dt.date(2024, 12, 31)


def generate_csv(path: Path, rows: int, seed: int = SEED) -> int:
    """Write `rows` deterministic rows (plus a header) to `path`, chunk by chunk; return bytes."""
    vocabulary = random.Random(seed)
    tags = pa.array([_tag(vocabulary) for _ in range(5000)])
    notes = pa.array([_note(vocabulary) for _ in range(2000)])
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\n")
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            lines = _chunk_lines(
                start, min(CHUNK_ROWS, rows - start), seed + 100 * index, tags, notes
            )
            out.write("\n".join(lines.to_pylist()))
            out.write("\n")
    return path.stat().st_size


def _tag(rng: random.Random) -> str:
    letters = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8)))
    return f"{letters}-{rng.randint(0, 99)}"


def _note(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(4, 12))
    if rng.random() < 0.3:  # a comma: the field must be quoted
        words[1] += ","
    text = " ".join(words)
    return f'"{text}"' if "," in text else text


def _chunk_lines(start: int, count: int, seed: int, tags: pa.Array, notes: pa.Array) -> pa.Array:
    """`count` CSV lines (no newline) as a string array, every column computed by Arrow."""
    seeds = iter(range(seed, seed + 100))

    def uniform() -> pa.Array:
        return pc.random(count, initializer=next(seeds))

    def integers(low: int, high: int) -> pa.Array:  # uniform in [low, high]
        scaled = pc.floor(pc.multiply(uniform(), high - low + 1))
        return pc.add(scaled.cast(pa.int64()), low)

    def with_nulls(values: pa.Array, share: float) -> pa.Array:
        return pc.if_else(pc.less(uniform(), share), pa.scalar(None, values.type), values)

    def pick(choices: pa.Array) -> pa.Array:
        return pc.take(choices, integers(0, len(choices) - 1))

    first_day = (FIRST_DAY - dt.date(1970, 1, 1)).days  # date32 counts days since 1970
    span = (LAST_DAY - FIRST_DAY).days
    columns = [
        pa.array(range(start + 1, start + count + 1), pa.int64()),  # order_id
        integers(1, 2_000_000),  # customer_id
        with_nulls(pc.round(pc.multiply(uniform(), 5000), 2), 0.05),  # amount
        with_nulls(pc.round(uniform(), 3), 0.30),  # discount
        integers(1, 50),  # quantity
        pick(pa.array(CATEGORIES)),  # category
        pick(pa.array(COUNTRIES)),  # country
        pc.less(uniform(), 0.35),  # is_member
        pc.add(integers(0, span), first_day).cast(pa.int32()).cast(pa.date32()),  # order_date
        pick(tags),  # tag
        with_nulls(pick(notes), 0.20),  # note
    ]
    text = [pc.fill_null(column.cast(pa.string()), "") for column in columns]
    return pc.binary_join_element_wise(*text, ",")


# --------------------------------------------------------------------------- the API process


class ApiServer:
    """`submitter api` on the embedded default in `home`, in its own process group."""

    def __init__(self, home: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = "sk_bench_" + secrets.token_urlsafe(16)
        self.log_path = log_path
        self.env = clean_env(
            SUBMITTER_HOME=str(home),
            SUBMITTER_ADMIN_KEY=self.admin_key,
            SUBMITTER_API_HOST="127.0.0.1",
            SUBMITTER_API_PORT=str(self.port),
            SUBMITTER_LOG_LEVEL="WARNING",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "submitter", "api"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/ready").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"API not ready after {timeout:.0f} s:\n{self.tail()}")
                time.sleep(0.1)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"submitter api exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def check_serving_process(pid: int, port: int) -> None:
    """Make sure `pid` itself holds the listening socket and has no children.

    Uvicorn with one worker runs the app in the CLI's process; with more (or a reloader)
    the requests would be served by a child, and the RSS read here would be the wrong one.
    """
    inodes = _listening_inodes(port)
    fds = Path(f"/proc/{pid}/fd")
    owned = {os.readlink(fd) for fd in fds.iterdir() if _is_link(fd)}
    if not any(f"socket:[{inode}]" in owned for inode in inodes):
        raise BenchError(f"process {pid} does not hold the socket listening on port {port}")
    children = " ".join(
        (task / "children").read_text() for task in Path(f"/proc/{pid}/task").iterdir()
    ).split()
    if children:
        raise BenchError(f"the API process {pid} has children {children}: RSS would be wrong")


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                    inodes.add(inode)
    return inodes


def _is_link(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.is_symlink()
    return False


# --------------------------------------------------------------------------- memory


def status_mb(pid: int | str, key: str) -> float:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / MB
    raise BenchError(f"no {key} in /proc/{pid}/status")


class RssSampler:
    """Polls VmRSS of a process in a thread; remembers the highest value and when it was."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.peak_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, BenchError):
                rss = status_mb(self.pid, "VmRSS")
                if rss > self.peak_mb:
                    self.peak_mb, self.peak_at = rss, time.perf_counter() - self._start
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- measurements


@dataclass
class Upload:
    seconds: float
    rss_before_mb: float  # VmRSS just before the upload
    hwm_before_mb: float  # VmHWM just before: start-up's peak
    peak_mb: float  # VmHWM after the upload
    sampled_peak_mb: float
    sampled_peak_at: float  # seconds into the upload
    dataset: dict[str, Any]


@dataclass
class Baseline:
    seconds: float
    peak_mb: float  # ru_maxrss
    imported_mb: float  # VmRSS after the imports, before reading
    parquet_bytes: int
    rows: int


@dataclass
class Aggregates:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: float = 0.0  # VmHWM of the API process after them

    def all(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]


BASELINE_SCRIPT = """
import json, resource, sys, time
import pyarrow.csv, pyarrow.parquet
with open("/proc/self/status") as status:
    imported = next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
start = time.perf_counter()
table = pyarrow.csv.read_csv(sys.argv[1])
pyarrow.parquet.write_table(table, sys.argv[2])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rows": table.num_rows, "peak_kb": peak,
                  "imported_kb": imported}))
"""


def run_baseline(csv_path: Path, out: Path) -> Baseline:
    """read_csv + write_table of `csv_path` in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, str(csv_path), str(out)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"baseline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    size = out.stat().st_size
    out.unlink()
    return Baseline(
        seconds=result["seconds"],
        peak_mb=result["peak_kb"] * 1024 / MB,
        imported_mb=result["imported_kb"] * 1024 / MB,
        parquet_bytes=size,
        rows=result["rows"],
    )


def run_upload(client: Client, server: ApiServer, csv_path: Path, rows: int) -> Upload:
    """Upload the CSV; time it and read the API process's memory around it."""
    if not client.ready():  # also opens the keep-alive connection the upload reuses
        raise BenchError("the API is not ready")
    rss_before = status_mb(server.pid, "VmRSS")
    hwm_before = status_mb(server.pid, "VmHWM")
    with RssSampler(server.pid) as sampler:
        start = time.perf_counter()
        try:
            dataset = client.upload_dataset(csv_path, DATASET_NAME)
        except (ApiError, httpx.HTTPError) as error:
            server.check_alive()
            raise BenchError(f"upload failed: {error}") from None
        seconds = time.perf_counter() - start
    if dataset.get("row_count") != rows:
        raise BenchError(f"the dataset has {dataset.get('row_count')} rows, not {rows}")
    return Upload(
        seconds=seconds,
        rss_before_mb=rss_before,
        hwm_before_mb=hwm_before,
        peak_mb=status_mb(server.pid, "VmHWM"),
        sampled_peak_mb=sampler.peak_mb,
        sampled_peak_at=sampler.peak_at,
        dataset=dataset,
    )


#: (label, Client.aggregate keyword arguments); values exist in the generated data.
QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "mean amount | category=books",
        {"fn": "mean", "column": "amount", "where": {"category": "books"}},
    ),
    ("count by category", {"fn": "count", "group_by": "category"}),
    (
        "sum quantity | country=DE, is_member=true",
        {"fn": "sum", "column": "quantity", "where": {"country": "DE", "is_member": "true"}},
    ),
)


def run_aggregates(client: Client, ref: str, count: int) -> Aggregates:
    """`count` aggregate requests, cycling through QUERIES."""
    result = Aggregates({label: [] for label, _ in QUERIES})
    for n in range(count):
        label, kwargs = QUERIES[n % len(QUERIES)]
        start = time.perf_counter()
        try:
            answer = client.aggregate(ref, **kwargs)
        except (ApiError, httpx.HTTPError) as error:
            raise BenchError(f"aggregate {label!r} failed: {error}") from None
        result.latencies[label].append(time.perf_counter() - start)
        if not answer.get("rows"):
            raise BenchError(f"aggregate {label!r} matched no rows: {answer}")
    return result


# --------------------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def print_report(
    csv_bytes: int, rows: int, upload: Upload, baseline: Baseline, aggregates: Aggregates
) -> None:
    sub_mbps = csv_bytes / MB / upload.seconds
    base_mbps = csv_bytes / MB / baseline.seconds
    throughput_ratio = sub_mbps / base_mbps
    latencies = aggregates.all()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"\n{rows:,} rows, CSV {csv_bytes / MB:.1f} MB; "
        f"Parquet: Submitter {upload.dataset.get('byte_size', 0) / MB:.1f} MB (zstd), "
        f"baseline {baseline.parquet_bytes / MB:.1f} MB (snappy)\n"
    )
    header = f"{'metric':<24} {'submitter':>10} {'baseline':>10} {'ratio':>7}  {'goal':<14} result"
    print(header)
    print("-" * len(header))
    table = [
        (
            "peak RSS (MB)",
            f"{upload.peak_mb:.0f}",
            f"{baseline.peak_mb:.0f}",
            f"{upload.peak_mb / baseline.peak_mb:.2f}",
            f"< {GOAL_PEAK_RSS_MB:.0f} MB",
            _met(upload.peak_mb < GOAL_PEAK_RSS_MB),
        ),
        (
            "throughput (MB/s)",
            f"{sub_mbps:.1f}",
            f"{base_mbps:.1f}",
            f"{throughput_ratio:.2f}",
            f">= {GOAL_THROUGHPUT_RATIO}x",
            _met(throughput_ratio >= GOAL_THROUGHPUT_RATIO),
        ),
        ("wall time (s)", f"{upload.seconds:.2f}", f"{baseline.seconds:.2f}", "", "", ""),
        (
            "aggregate p50 (s)",
            f"{p50:.3f}",
            "-",
            "",
            f"< {GOAL_AGGREGATE_P50_S} s",
            _met(p50 < GOAL_AGGREGATE_P50_S),
        ),
        ("aggregate p99 (s)", f"{p99:.3f}", "-", "", "", ""),
    ]
    for metric, sub, base, ratio, goal, result in table:
        print(f"{metric:<24} {sub:>10} {base:>10} {ratio:>7}  {goal:<14} {result}")
    print(
        f"\nAPI memory (MB): RSS before upload {upload.rss_before_mb:.0f}, "
        f"peak before upload (start-up) {upload.hwm_before_mb:.0f}, "
        f"peak after {upload.peak_mb:.0f}; sampled peak {upload.sampled_peak_mb:.0f} "
        f"at {upload.sampled_peak_at:.1f} s of {upload.seconds:.1f} s; "
        f"peak after the aggregates {aggregates.peak_mb:.0f}"
    )
    print(
        f"baseline memory (MB): after imports {baseline.imported_mb:.0f}, "
        f"peak {baseline.peak_mb:.0f}"
    )
    columns = ", ".join(f"{c['name']}:{c['dtype']}" for c in upload.dataset.get("columns", []))
    print(f"dataset columns: {columns}")
    print(f"aggregates ({len(latencies)} requests), per query p50 / max (s):")
    for label, values in aggregates.latencies.items():
        if values:
            print(
                f"  {label:<44} {percentile(values, 50):.3f} / {max(values):.3f}  ({len(values)})"
            )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV data rows")
    parser.add_argument("--aggregates", type=int, default=20, help="aggregate requests")
    parser.add_argument(
        "--keep-file", type=Path, metavar="PATH", help="write the CSV here and keep it"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.aggregates < 1:
        parser.error("--rows and --aggregates must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> None:
    csv_path = args.keep_file or work / "bench.csv"
    log(f"writing {args.rows:,} rows to {csv_path}")
    started = time.perf_counter()
    csv_bytes = generate_csv(csv_path, args.rows)
    log(f"{csv_bytes / MB:.1f} MB in {time.perf_counter() - started:.1f} s")

    log("baseline: pyarrow.csv.read_csv + pyarrow.parquet.write_table in a fresh process")
    baseline = run_baseline(csv_path, work / "baseline.parquet")
    if baseline.rows != args.rows:
        raise BenchError(f"the baseline read {baseline.rows} rows, not {args.rows}")

    home = work / "home"
    home.mkdir()
    server = ApiServer(home, work / "api.log")
    try:
        server.start()
        server.wait_ready()
        check_serving_process(server.pid, server.port)
        with Client(server.url, server.admin_key, timeout=120) as client:
            log(f"upload through {server.url} (API pid {server.pid})")
            upload = run_upload(client, server, csv_path, args.rows)
            log(f"aggregates: {args.aggregates} requests")
            aggregates = run_aggregates(client, upload.dataset["id"], args.aggregates)
            aggregates.peak_mb = status_mb(server.pid, "VmHWM")
    finally:
        server.stop()
    print_report(csv_bytes, args.rows, upload, baseline, aggregates)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C (even when started with SIGINT ignored, as `cmd &` does) and SIGTERM unwind, so
    # the finally blocks stop the API and remove the temp files.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="submitter-bench-ingest-") as tmp:
        try:
            run(args, Path(tmp))
        except BenchError as error:
            log(f"FAILED: {error}")
            return 1
        except KeyboardInterrupt:
            log("interrupted; stopping the API and cleaning up")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
