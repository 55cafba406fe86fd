"""Load generator of `bench/predict.py`, run in its own process (no GIL shared with a server).

    python _predict_load.py SPEC.json RESULT.json

SPEC holds `url`, `bodies` (JSON strings, sent in turn), `headers`, `concurrency`, `seconds`
and `warmup_seconds`. `concurrency` asyncio tasks each keep one HTTP/1.1 keep-alive connection
(asyncio streams, framed by h11); each sends one request, waits for the answer, sends the
next. Not httpx: its connection pool cost ~2 ms of this process's CPU per request at 32
connections, so the generator saturated its core at ~230 req/s while the server it measured
sat at 25-55 % (top, 2026-12-03); h11 alone costs a few tens of microseconds. After
`warmup_seconds` (not counted) every request that *starts* within `seconds` is counted; the
rate is completed requests / (last completion - start). RESULT gets the count, the rate, the
latency percentiles (nearest rank) and the non-200 answers (count and the first one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a body, return (status, response body)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.headers = [("Host", f"{self.host}:{self.port}"), *headers.items()]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.h11 = h11.Connection(h11.CLIENT)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.h11.our_state is h11.MUST_CLOSE:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.h11 = h11.Connection(h11.CLIENT)
        assert self.reader is not None and self.writer is not None
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        self.writer.write(
            self.h11.send(h11.Request(method="POST", target=self.target, headers=headers))
            + self.h11.send(h11.Data(data=body))
            + self.h11.send(h11.EndOfMessage())
        )
        status, chunks = 0, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return status, b"".join(chunks)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def phase(
    connections: list[Connection], bodies: list[bytes], seconds: float
) -> dict[str, Any]:
    """One request loop per connection for `seconds`; latencies and failures."""
    latencies: list[float] = []
    failures: list[str] = []
    concurrency = len(connections)
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
            status, text = await connections[worker].post(body)
            ended = time.perf_counter()
            if status == 200:
                latencies.append(ended - sent)
            else:
                failures.append(f"{status}: {text[:500].decode(errors='replace')}")
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
    headers = {"Content-Type": "application/json", **spec["headers"]}
    connections = [Connection(spec["url"], headers) for _ in range(int(spec["concurrency"]))]
    try:
        if spec["warmup_seconds"] > 0:
            await phase(connections, bodies, float(spec["warmup_seconds"]))
        load_before = Path("/proc/loadavg").read_text().split()[0]
        result = await phase(connections, bodies, float(spec["seconds"]))
        result["loadavg_1m_before"] = float(load_before)
        result["loadavg_1m_after"] = float(Path("/proc/loadavg").read_text().split()[0])
        return result
    finally:
        for connection in connections:
            await connection.close()


def main(spec_file: str, result_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = asyncio.run(run(spec))
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
