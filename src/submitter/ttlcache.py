"""A small in-process cache whose entries live `ttl` seconds, for hot read paths.

Used where every request would otherwise make the same database read (the API key of the
caller, the version an alias points at): the staleness across processes is bounded by `ttl`,
and within a process a change made here is seen at once, because the code that makes it
calls `invalidate(topic)`, which empties every cache of that topic in the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_generations: dict[str, int] = {}
_lock = threading.Lock()


def invalidate(topic: str) -> None:
    """Drop every cached entry of `topic` in this process (e.g. after revoking a key)."""
    with _lock:
        _generations[topic] = _generations.get(topic, 0) + 1


class TTLCache(Generic[V]):
    """`get(key, load)`: the cached value if younger than `ttl` seconds, else `load()`.

    Only values are cached, never exceptions (a 404 is asked again next time). Bounded by
    `max_entries` (cleared when full: the entries are cheap to reload).
    """

    def __init__(self, topic: str, ttl: float, max_entries: int = 10_000) -> None:
        self.topic, self.ttl, self.max_entries = topic, ttl, max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._generation = _generations.get(topic, 0)

    def lookup(self, key: Hashable) -> tuple[bool, V | None]:
        """(True, value) on a fresh hit, else (False, None); no I/O."""
        generation = _generations.get(self.topic, 0)
        if generation != self._generation:
            self._entries = {}
            self._generation = generation
        found = self._entries.get(key)
        if found is not None and time.monotonic() - found[0] < self.ttl:
            return True, found[1]
        return False, None

    def store(self, key: Hashable, value: V) -> V:
        if len(self._entries) >= self.max_entries:
            self._entries = {}
        self._entries[key] = (time.monotonic(), value)
        return value

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        hit, value = self.lookup(key)
        if hit:
            return value  # type: ignore[return-value]
        return self.store(key, load())
