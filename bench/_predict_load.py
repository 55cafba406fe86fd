"""Load generator of `bench/predict.py`, run in its own process (no GIL shared with a server).

    python _predict_load.py SPEC.json RESULT.json

SPEC holds `url`, `bodies` (JSON strings, sent in turn), `headers`, `concurrency`, `seconds`
and `warmup_seconds`. `concurrency` asyncio tasks share one `httpx.AsyncClient` with as many
keep-alive connections; each sends one request, waits for the answer, sends the next. After
`warmup_seconds` (not counted) every request that *starts* within `seconds` is counted; the
rate is completed requests / (last completion - start). RESULT gets the count, the rate, the
latency percentiles (nearest rank) and the non-200 answers (count and the first one).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def phase(
    client: httpx.AsyncClient, spec: dict[str, Any], bodies: list[bytes], seconds: float
) -> dict[str, Any]:
    """`spec["concurrency"]` request loops for `seconds`; latencies and failures."""
    latencies: list[float] = []
    failures: list[str] = []
    concurrency = int(spec["concurrency"])
    start = time.perf_counter()
    deadline = start + seconds
    last_end = start

    async def loop(worker: int) -> None:
        nonlocal last_end
        n = worker
        while time.perf_counter() < deadline:
            body = bodies[n % len(bodies)]
            n += concurrency
            sent = time.perf_counter()
            response = await client.post(spec["url"], content=body)
            ended = time.perf_counter()
            if response.status_code == 200:
                latencies.append(ended - sent)
            else:
                failures.append(f"{response.status_code}: {response.text[:500]}")
            last_end = max(last_end, ended)

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    elapsed = last_end - start
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else math.nan,
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else math.nan,
        "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else math.nan,
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    bodies = [b.encode() for b in spec["bodies"]]
    concurrency = int(spec["concurrency"])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json", **spec["headers"]}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        if spec["warmup_seconds"] > 0:
            await phase(client, spec, bodies, float(spec["warmup_seconds"]))
        load_before = Path("/proc/loadavg").read_text().split()[0]
        result = await phase(client, spec, bodies, float(spec["seconds"]))
        result["loadavg_1m_before"] = float(load_before)
        result["loadavg_1m_after"] = float(Path("/proc/loadavg").read_text().split()[0])
        return result


def main(spec_file: str, result_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = asyncio.run(run(spec))
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
