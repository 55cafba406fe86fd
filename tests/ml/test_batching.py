"""Micro-batching: concurrent requests share one model call, each gets its own rows back,
and a request that makes the model fail fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from submitter.registry.batching import Batcher


class _Model:
    """Doubles its input; refuses a batch holding a negative value (as a model might)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, feed: dict[str, np.ndarray]) -> tuple[list[Any], np.ndarray]:
        x = feed["x"].reshape(-1)
        self.calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return (x * 2).tolist(), np.stack([x, 1 - x], axis=1)


def _feed(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


def test_waiting_requests_share_a_call_and_get_their_own_rows() -> None:
    model, batcher = _Model(), Batcher()

    async def main() -> list[Any]:
        feeds = [_feed(1), _feed(2, 3), _feed(4)]
        return await asyncio.gather(*(batcher.run("v1", model, f, len(f["x"])) for f in feeds))

    results = asyncio.run(main())
    assert [labels for labels, _ in results] == [[2.0], [4.0, 6.0], [8.0]]
    assert [p[:, 0].tolist() for _, p in results] == [[1.0], [2.0, 3.0], [4.0]]
    assert model.calls == [4]  # one call for the four rows


def test_a_lone_request_runs_at_once_and_the_row_cap_splits_batches() -> None:
    model, batcher = _Model(), Batcher(max_rows=2)

    async def lone() -> Any:
        return await batcher.run("v1", model, _feed(5), 1)

    assert asyncio.run(lone())[0] == [10.0]

    async def many() -> list[Any]:
        return await asyncio.gather(*(batcher.run("v1", model, _feed(i), 1) for i in range(5)))

    results = asyncio.run(many())
    assert [labels for labels, _ in results] == [[0.0], [2.0], [4.0], [6.0], [8.0]]
    assert model.calls == [1, 2, 2, 1]


def test_a_bad_request_in_a_batch_fails_alone() -> None:
    model, batcher = _Model(), Batcher()

    async def main() -> list[Any]:
        feeds = [_feed(1), _feed(-1), _feed(3)]
        return await asyncio.gather(
            *(batcher.run("v1", model, f, 1) for f in feeds), return_exceptions=True
        )

    good, bad, other = asyncio.run(main())
    assert good[0] == [2.0] and other[0] == [6.0]
    assert isinstance(bad, ValueError)
    with pytest.raises(ValueError):
        raise bad
