"""A score store in Redis, shared by every replica and worker process.

A request's keys are read with one MGET and written with one pipelined batch of
`SET key value PX ttl`, so 100 documents cost one round trip each way. Values are
8-byte little-endian doubles (the exact score, so a hit answers what the upstream did).

On Redis Cluster the gateway tags a request's keys so they share one slot (see
`policies.cache.keys`), and a lookup is one MGET; keys in several slots are grouped by
slot, one MGET per slot, pipelined (the client sends each node its share at once).

Fleet-wide single flight uses short leases here too: `take_lease` (one `SET NX PX`) tells
the first process to miss a set of documents that it fetches them; the others `peek`
until the scores land (or the lease is gone) and `set_many(..., release=lease)` writes the
scores and drops the lease in the same round trip.

Redis being down or slow never fails a request: every call is bounded by `timeout_s`,
a failure reads as a miss (writes are dropped), is reported to `on_error`, and Redis is
left alone for `backoff_s` before the next try, so an outage costs no latency per request.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from policies.cache.store import ErrorHook

_VALUE = struct.Struct("<d")
FAILURES = (RedisError, OSError, asyncio.TimeoutError)
Client = TypeVar("Client")  # what a store speaks to Redis through


class RedisBase(Generic[Client]):
    """What every Redis score store keeps, whatever speaks to Redis for it: the key
    prefix, the lease keys, and the failure rule of the module's text (a failed call is
    reported and Redis left alone for `backoff_s`). `RedisStore` speaks through redis-py,
    `policies.cache.resp.RespStore` over a lean connection of its own; both keep
    `SharedStore`'s contract."""

    backend = "redis"

    def __init__(
        self,
        client: Client,
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

    def _lease_key(self, lease: bytes) -> bytes:
        return self.prefix + b"lease:" + lease

    def _available(self) -> bool:
        return self.clock() >= self._resume_at

    def _failed(self, exc: BaseException) -> None:
        self._resume_at = self.clock() + self.backoff_s
        self.on_error(self.backend, exc)


class RedisStore(RedisBase[aioredis.Redis | RedisCluster]):
    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        if not keys or not self._available():
            return [None] * len(keys)
        prefix = self.prefix
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await _mget(self.client, [prefix + k for k in keys])
        except FAILURES as exc:
            self._failed(exc)
            return [None] * len(keys)
        return [_unpack(v) for v in values]

    async def set_many(
        self,
        keys: Sequence[bytes],
        scores: Sequence[float],
        ttl_s: float,
        release: bytes | None = None,
    ) -> None:
        if not keys or not self._available():
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        pipe = self.client.pipeline(transaction=False)
        for key, score in zip(keys, scores, strict=True):
            pipe.set(self.prefix + key, _VALUE.pack(score), px=ttl_ms)
        if release is not None:
            pipe.delete(self._lease_key(release))
        try:
            async with asyncio.timeout(self.timeout_s):
                await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)

    async def take_lease(self, lease: bytes, ttl_s: float) -> bool | None:
        """True: this process fetches; False: another holds the lease; None: Redis is
        unavailable (act alone)."""
        if not self._available():
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                taken = await self.client.set(
                    self._lease_key(lease), b"1", nx=True, px=max(1, int(ttl_s * 1000))
                )
        except FAILURES as exc:
            self._failed(exc)
            return None
        return bool(taken)

    async def peek(self, keys: Sequence[bytes], lease: bytes) -> tuple[list[float | None], bool]:
        """The scores of `keys` and whether `lease` is still held, in one round trip."""
        if not self._available():
            return [None] * len(keys), False
        full = [self.prefix + k for k in keys]
        try:
            async with asyncio.timeout(self.timeout_s):
                if isinstance(self.client, RedisCluster):  # the lease is in another slot
                    values, held = await asyncio.gather(
                        _mget(self.client, full), self.client.exists(self._lease_key(lease))
                    )
                else:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.mget(full)
                    pipe.exists(self._lease_key(lease))
                    values, held = await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)
            return [None] * len(keys), False
        return [_unpack(v) for v in values], bool(held)

    async def drop_lease(self, lease: bytes) -> None:
        if not self._available():
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.delete(self._lease_key(lease))
        except FAILURES as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self.client.aclose()


async def _mget(client: aioredis.Redis | RedisCluster, keys: list[bytes]) -> list[object]:
    if not isinstance(client, RedisCluster):
        return list(await client.mget(keys))
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_slot.setdefault(client.keyslot(key), []).append(i)
    if len(by_slot) == 1:
        return list(await client.mget(keys))
    # One MGET per slot, pipelined: the cluster client sends each node its share at once.
    pipe = client.pipeline(transaction=False)
    groups = list(by_slot.values())
    for group in groups:
        pipe.execute_command("MGET", *(keys[i] for i in group))
    values: list[object] = [None] * len(keys)
    for group, replies in zip(groups, await pipe.execute(), strict=True):
        for i, value in zip(group, replies, strict=True):
            values[i] = value
    return values


def _unpack(value: object) -> float | None:
    if not isinstance(value, bytes) or len(value) != _VALUE.size:
        return None  # absent, or not written by this layout: a miss
    return float(_VALUE.unpack(value)[0])
