"""Two levels: this process's memory in front of the shared Redis.

Reads try memory first and ask Redis only for what memory lacks (copying Redis hits
into memory); writes go to both. Memory keeps answering while Redis is down.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.cache.memory import MemoryStore
from policies.cache.store import SharedStore


class TieredStore:
    backend = "tiered"

    def __init__(self, memory: MemoryStore, redis: SharedStore) -> None:
        self.memory = memory
        self.redis = redis

    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        found = self.memory.get_now(keys)
        missing = [i for i, score in enumerate(found) if score is None]
        if not missing:
            return found
        shared = await self.redis.get_many([keys[i] for i in missing], ttl_s)
        fill_keys: list[bytes] = []
        fill_scores: list[float] = []
        for i, score in zip(missing, shared, strict=True):
            if score is not None:
                found[i] = score
                fill_keys.append(keys[i])
                fill_scores.append(score)
        if fill_keys:
            self.memory.put_now(fill_keys, fill_scores, ttl_s)
        return found

    async def set_many(
        self,
        keys: Sequence[bytes],
        scores: Sequence[float],
        ttl_s: float,
        release: bytes | None = None,
    ) -> None:
        self.memory.put_now(keys, scores, ttl_s)
        await self.redis.set_many(keys, scores, ttl_s, release)

    async def take_lease(self, lease: bytes, ttl_s: float) -> bool | None:
        return await self.redis.take_lease(lease, ttl_s)

    async def peek(self, keys: Sequence[bytes], lease: bytes) -> tuple[list[float | None], bool]:
        return await self.redis.peek(keys, lease)

    async def drop_lease(self, lease: bytes) -> None:
        await self.redis.drop_lease(lease)

    async def close(self) -> None:
        await self.memory.close()
        await self.redis.close()
