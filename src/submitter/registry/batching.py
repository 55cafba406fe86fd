"""Adaptive micro-batching of compiled predictions, on the API's event loop.

Concurrent requests for one version are answered by one ONNX Runtime call when they are
already waiting: a request joins the version's queue, and a drain task (started by the first
request to find the queue idle) takes everything queued, up to `MAX_BATCH_ROWS` rows, runs it
once and hands every request its own rows back. Nothing waits for company: a lone request is
run on the next turn of the event loop. Every request is validated on its own before it is
queued, so a bad one is refused alone; and if a batch call fails, its requests are run one
by one, so one request's failure never fails another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_BATCH_ROWS = 512


@dataclass
class _Item:
    feed: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[tuple[list[Any], np.ndarray | None]] = field(repr=False)


class Batcher:
    """One queue per version id; `run` returns (labels, probabilities) for its own rows."""

    def __init__(self, max_rows: int = MAX_BATCH_ROWS) -> None:
        self.max_rows = max_rows
        self._queues: dict[str, list[_Item]] = {}
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self.batches = 0  # calls made, for tests and curiosity
        self.batched_requests = 0

    async def run(
        self, key: str, model: Any, feed: Mapping[str, np.ndarray], rows: int
    ) -> tuple[list[Any], np.ndarray | None]:
        loop = asyncio.get_running_loop()
        item = _Item(feed, rows, loop.create_future())
        self._queues.setdefault(key, []).append(item)
        if key not in self._draining:
            self._start(key, model)
        return await item.future

    def _start(self, key: str, model: Any) -> None:
        self._draining.add(key)
        task = asyncio.get_running_loop().create_task(self._drain(key, model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str, model: Any) -> None:
        try:
            queue = self._queues[key]
            while queue:
                batch: list[_Item] = []
                total = 0
                while queue and (not batch or total + queue[0].rows <= self.max_rows):
                    item = queue.pop(0)
                    batch.append(item)
                    total += item.rows
                self._answer(model, batch)
                await asyncio.sleep(0)  # let the answered requests respond, others queue
        finally:
            self._draining.discard(key)
            if not self._queues.get(key):
                self._queues.pop(key, None)
            elif key not in self._draining:  # arrived after the last look: drain again
                self._start(key, model)

    def _answer(self, model: Any, batch: list[_Item]) -> None:
        self.batches += 1
        self.batched_requests += len(batch)
        if len(batch) > 1:
            try:
                feed = {
                    name: np.concatenate([item.feed[name] for item in batch])
                    for name in batch[0].feed
                }
                labels, probabilities = model.run(feed)
            except Exception:  # run them one by one: only the culprit fails
                pass
            else:
                start = 0
                for item in batch:
                    end = start + item.rows
                    part = None if probabilities is None else probabilities[start:end]
                    _settle(item, (labels[start:end], part))
                    start = end
                return
        for item in batch:
            try:
                result = model.run(item.feed)
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                _settle(item, result)


def _settle(item: _Item, result: tuple[list[Any], np.ndarray | None]) -> None:
    if not item.future.done():  # a client that went away cancelled it
        item.future.set_result(result)
