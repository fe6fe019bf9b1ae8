"""Usage records written while Redis is down are kept and written once it answers again."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from policies.money.quota import StoreUnavailable
from policies.money.redis_usage import RedisUsageStore
from policies.money.usage_buffer import BufferedUsageStore
from tests.support.redis_server import OwnRedis

DAY = "2026-12-01"


async def test_records_survive_an_outage(own_redis: OwnRedis) -> None:
    client = aioredis.Redis.from_url(own_redis.url, socket_connect_timeout=1, socket_timeout=1)
    store = BufferedUsageStore(RedisUsageStore(client, "u:", 30))
    try:
        await store.add("search", DAY, "m", "d", {"requests": 1, "cost_micros": 10})
        own_redis.stop()
        for _ in range(3):  # during the outage: refused (the caller logs it), but kept
            with pytest.raises(StoreUnavailable):
                await store.add("search", DAY, "m", "d", {"requests": 1, "cost_micros": 10})
        with pytest.raises(StoreUnavailable):
            await store.add("ads", DAY, "m", "", {"rejected_budget": 1})
        assert len(store.pending) == 2  # merged per team, day, model and deployment
        own_redis.start()  # the same port, empty: only what is written from now on counts
        await store.add("search", DAY, "m", "d", {"requests": 1, "cost_micros": 10})
        assert store.pending == {} and store.dropped == 0
        search = await store.read("search", [DAY])
        ads = await store.read("ads", [DAY])
    finally:
        await client.aclose()
    assert search[("m", "d")] == {"requests": 4, "cost_micros": 40}  # 3 kept + 1 after
    assert ads[("m", "")] == {"rejected_budget": 1}


async def test_pending_buckets_are_bounded() -> None:
    class Down:
        async def add(self, *args: object) -> None:
            raise StoreUnavailable("redis: ConnectionError: refused")

        async def read(self, team: str, days: object) -> dict:
            return {}

    store = BufferedUsageStore(Down(), max_pending=2)
    for team in ("a", "b", "c"):
        with pytest.raises(StoreUnavailable):
            await store.add(team, DAY, "m", "", {"requests": 1})
    assert [bucket[0] for bucket in store.pending] == ["b", "c"] and store.dropped == 1

    # A timeout may have been applied: such a record is not kept (it would count twice).
    class Slow(Down):
        async def add(self, *args: object) -> None:
            raise StoreUnavailable("redis: TimeoutError: Timeout reading from socket")

    slow = BufferedUsageStore(Slow())
    with pytest.raises(StoreUnavailable):
        await slow.add("a", DAY, "m", "", {"requests": 1})
    assert slow.pending == {}
