"""Short-lived in-process caches for the read storm at release time.

Both are deliberately per process and short: a stale answer lasts at most ``ttl`` seconds
(a schedule page a few seconds old, or "full" for a pool where a slot was just given back
in another process). Nothing that must be shared or exact lives here: the guarded UPDATE
in the database always decides who gets a slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(
        self, ttl: float, *, max_entries: int = 10_000, clock: Callable[[], float] | None = None
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._items: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires <= self._clock():
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._items) >= self.max_entries:
            self._items.clear()  # crude but bounded: a cache must never grow without limit
        self._items[key] = (self._clock() + self.ttl, value)

    def forget(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


# Schedules (local ids) whose pool was found empty; booking answers "full" without the DB.
full_pools: TtlCache[bool] = TtlCache(3.0)


def configure(ttl_seconds: float) -> None:
    full_pools.ttl = ttl_seconds
