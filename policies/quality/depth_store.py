"""Where depth counters live between flushes and reads: the store interface, and the
store of one process (no `state.redis_url`).

Counters are kept per team, model and time bucket (bucket number = epoch seconds //
bucket length); a store forgets buckets older than the window, so reading the window's
buckets is the sliding window. Each bucket also keeps `t0`, the epoch second of its first
write (kept, not summed), so a reader knows how long its counts cover. A store also
remembers which teams' enforcement was switched back to advise, until that expires.
The shared one is `policies.quality.redis_depth`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

FIRST = "t0"  # the bucket's first write, epoch seconds


class DepthStore(Protocol):
    scope: str  # for readers: "this process" or "fleet (Redis)"

    async def add(
        self, team: str, model: str, bucket: int, counts: Mapping[str, int], now: float
    ) -> None: ...

    async def read(
        self, team: str, model: str, buckets: Sequence[int]
    ) -> tuple[Counter[str], float | None]:
        """The buckets' counters summed, and the earliest first write (None: no data)."""
        ...

    async def models(self, team: str) -> set[str]:
        """The models the team has counters for."""
        ...

    async def revert(self, team: str, model: str, ttl_s: float) -> bool:
        """Mark enforcement switched back to advise; True when this call marked it."""
        ...

    async def reverted(self, team: str, model: str) -> bool: ...


class MemoryDepthStore:
    scope = "this process"

    def __init__(self, window_buckets: int, clock: Callable[[], float] = time.time) -> None:
        self.window_buckets = window_buckets
        self.clock = clock
        self._buckets: dict[tuple[str, str], dict[int, Counter[str]]] = {}
        self._reverted: dict[tuple[str, str], float] = {}  # until, epoch seconds

    async def add(
        self, team: str, model: str, bucket: int, counts: Mapping[str, int], now: float
    ) -> None:
        buckets = self._buckets.setdefault((team, model), {})
        found = buckets.get(bucket)
        if found is None:
            found = buckets[bucket] = Counter({FIRST: int(now)})
            for old in [b for b in buckets if b <= bucket - self.window_buckets]:
                del buckets[old]
        found.update(counts)

    async def read(
        self, team: str, model: str, buckets: Sequence[int]
    ) -> tuple[Counter[str], float | None]:
        kept = self._buckets.get((team, model), {})
        summed: Counter[str] = Counter()
        first: float | None = None
        for bucket in buckets:
            counts = kept.get(bucket)
            if counts is None:
                continue
            start = counts[FIRST]
            first = start if first is None else min(first, start)
            summed.update(counts)
        del summed[FIRST]
        return summed, first

    async def models(self, team: str) -> set[str]:
        return {model for (t, model), buckets in self._buckets.items() if t == team and buckets}

    async def revert(self, team: str, model: str, ttl_s: float) -> bool:
        if await self.reverted(team, model):
            return False
        self._reverted[team, model] = self.clock() + ttl_s
        return True

    async def reverted(self, team: str, model: str) -> bool:
        until = self._reverted.get((team, model))
        return until is not None and until > self.clock()
