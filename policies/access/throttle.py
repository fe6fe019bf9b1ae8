"""Attempts per key (a client address, a team), limited per minute by GCRA.

For the few places where someone may try again and again: signing in to the status
page (failed attempts, per client address and in all) and issuing API keys (per team).
Each key's state is one theoretical arrival time, as in `policies.money.ratelimit.Gcra`, so a
key may use a minute's allowance in a burst after a quiet spell, then gets the steady
rate. `wait` asks without counting; `take` counts one attempt when it fits. This module
keeps the state in memory, for one process (bounded: idle keys are dropped);
`policies.access.redis_throttle` keeps it in Redis, for every replica at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from policies.money.ratelimit import US, Gcra, to_us

MAX_KEYS = 10_000  # keys remembered in memory; idle ones go first


class Throttle(Protocol):
    gcra: Gcra

    async def wait(self, key: str) -> float:
        """Seconds until one more attempt would fit (0: it fits now)."""
        ...

    async def take(self, key: str) -> float:
        """Count one attempt and return 0 when it fits; otherwise the seconds to wait."""
        ...


class MemoryThrottle:
    def __init__(
        self,
        name: str,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        most_keys: int = MAX_KEYS,
    ) -> None:
        self.gcra = Gcra(name, per_minute)
        self.clock = clock
        self.most_keys = most_keys
        self._tats: dict[str, int] = {}

    async def wait(self, key: str) -> float:
        verdict = self.gcra.check(self._tats.get(key), to_us(self.clock()), 1)
        return verdict.wait_us / US

    async def take(self, key: str) -> float:
        now = to_us(self.clock())
        verdict = self.gcra.check(self._tats.get(key), now, 1)
        if not verdict.allowed:
            return verdict.wait_us / US
        self._tats.pop(key, None)  # re-inserted last: the dict's order is the order of use
        self._tats[key] = verdict.tat_us
        if len(self._tats) > self.most_keys:
            self._forget(now)
        return 0.0

    def _forget(self, now_us: int) -> None:
        """Drop keys whose bucket is full again (they would start afresh anyway), else
        the least recently used."""
        idle = [k for k, tat in self._tats.items() if tat <= now_us]
        for key in idle or list(self._tats)[: len(self._tats) - self.most_keys]:
            del self._tats[key]
