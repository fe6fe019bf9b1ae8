"""A score store in Redis, shared by every replica and worker process.

A request's keys are read with one MGET and written with one pipelined batch of
`SET key value PX ttl`, so 100 documents cost one round trip each way. Values are
8-byte little-endian doubles (the exact score, so a hit answers what the upstream did).

Redis being down or slow never fails a request: every call is bounded by `timeout_s`,
a failure reads as a miss (writes are dropped), is reported to `on_error`, and Redis is
left alone for `backoff_s` before the next try, so an outage costs no latency per request.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from policies.cache.store import ErrorHook

_VALUE = struct.Struct("<d")
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisStore:
    backend = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        timeout_s: float,
        backoff_s: float,
        on_error: ErrorHook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = key_prefix.encode()
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.on_error = on_error
        self.clock = clock
        self._resume_at = float("-inf")

    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        if not keys or not self._available():
            return [None] * len(keys)
        prefix = self.prefix
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self.client.mget([prefix + k for k in keys])
        except FAILURES as exc:
            self._failed(exc)
            return [None] * len(keys)
        return [_unpack(v) for v in values]

    async def set_many(self, keys: Sequence[bytes], scores: Sequence[float], ttl_s: float) -> None:
        if not keys or not self._available():
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        pipe = self.client.pipeline(transaction=False)
        for key, score in zip(keys, scores, strict=True):
            pipe.set(self.prefix + key, _VALUE.pack(score), px=ttl_ms)
        try:
            async with asyncio.timeout(self.timeout_s):
                await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self.client.aclose()

    def _available(self) -> bool:
        return self.clock() >= self._resume_at

    def _failed(self, exc: BaseException) -> None:
        self._resume_at = self.clock() + self.backoff_s
        self.on_error(self.backend, exc)


def _unpack(value: object) -> float | None:
    if not isinstance(value, bytes) or len(value) != _VALUE.size:
        return None  # absent, or not written by this layout: a miss
    return float(_VALUE.unpack(value)[0])
