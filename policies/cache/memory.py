"""An in-process score store: LRU order, a TTL per entry, bounded by entries and bytes."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat

# What one entry costs in CPython (a 16-byte digest key, a (score, expiry) tuple and the
# OrderedDict slot), measured with tracemalloc; `max_bytes` is converted with it.
ENTRY_BYTES = 260


def _drain(calls: Iterator[object]) -> None:
    """Run a lazy `map` of calls to the end in C, keeping none of the results."""
    deque(calls, maxlen=0)


class MemoryStore:
    backend = "memory"

    def __init__(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = []
        if max_entries is not None:
            limits.append(max_entries)
        if max_bytes is not None:
            limits.append(max_bytes // ENTRY_BYTES)
        if not limits:
            raise ValueError("a memory cache needs max_entries or max_bytes")
        self.capacity = max(1, min(limits))
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, keys: Sequence[bytes]) -> list[float | None]:
        entries = self._entries
        found: list[tuple[float, float] | None] = list(map(entries.get, keys))  # in C
        if found.count(None) == len(found):
            return found  # type: ignore[return-value]  # all None: a full miss
        now = self.clock()
        scores: list[float | None] = []
        for key, entry in zip(keys, found, strict=True):
            if entry is None:
                scores.append(None)
            elif entry[1] <= now:
                entries.pop(key, None)  # a key repeated in the batch is gone already
                scores.append(None)
            else:
                entries.move_to_end(key)
                scores.append(entry[0])
        return scores

    def put_now(self, keys: Sequence[bytes], scores: Sequence[float], ttl_s: float) -> None:
        expires = self.clock() + ttl_s
        entries = self._entries
        before = len(entries)
        entries.update(zip(keys, zip(scores, repeat(expires)), strict=True))
        if len(entries) - before < len(keys):
            # Some keys were stored already (or repeat in the batch): the update left them
            # where they were, so the batch moves to the end in its order. The usual batch
            # is all new and pays only the length check.
            _drain(map(entries.move_to_end, keys))
        excess = len(entries) - self.capacity
        if excess > 0:  # the least recently used go first, popped in C
            _drain(map(entries.popitem, repeat(False, excess)))

    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        return self.get_now(keys)

    async def set_many(self, keys: Sequence[bytes], scores: Sequence[float], ttl_s: float) -> None:
        self.put_now(keys, scores, ttl_s)

    async def close(self) -> None:
        self._entries.clear()
