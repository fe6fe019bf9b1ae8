"""Group commit of usage records (gateway.state.usage_batch): concurrent records are summed
per bucket and written once, every caller waits for its own record, and a failure reaches
exactly the callers whose records it held. Real Redis for the counters where it matters."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
import redis

from gateway.state.usage_batch import GroupCommit
from policies.money.quota import StoreUnavailable
from policies.money.redis_usage import RedisUsageStore
from policies.money.usage import MemoryUsageStore, Slot
from policies.money.usage_buffer import BufferedUsageStore

DAY = "2026-12-07"


class Recording:
    """A memory usage store that records each write, and can be made to fail or wait."""

    def __init__(self) -> None:
        self.inner = MemoryUsageStore()
        self.writes: list[tuple[str, str, str, str, dict[str, int]]] = []
        self.failing: set[str] = set()  # teams whose writes fail
        self.gate: asyncio.Event | None = None  # writes wait for it when set

    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        self.writes.append((team, day, model, deployment, dict(counts)))
        if self.gate is not None:
            await self.gate.wait()
        if team in self.failing:
            raise StoreUnavailable("down")
        await self.inner.add(team, day, model, deployment, counts)

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        return await self.inner.read(team, days)


async def test_one_record_at_a_time_is_written_at_once() -> None:
    inner = Recording()
    store = GroupCommit(inner)
    await store.add("a", DAY, "m", "d", {"requests": 1, "units": 2})
    assert inner.writes == [("a", DAY, "m", "d", {"requests": 1, "units": 2})]
    assert await store.read("a", [DAY]) == {("m", "d"): Counter(requests=1, units=2)}


async def test_concurrent_records_are_summed_per_bucket_and_written_once_each() -> None:
    inner = Recording()
    store = GroupCommit(inner)
    inner.gate = asyncio.Event()
    first = asyncio.create_task(store.add("a", DAY, "m", "d", {"requests": 1}))
    await asyncio.sleep(0)  # the writer takes the first record and waits at the gate
    later = [
        asyncio.create_task(store.add(team, DAY, "m", "d", {"requests": 1, "units": n}))
        for n, team in enumerate(["a", "a", "b", "a"], start=1)
    ]
    await asyncio.sleep(0)
    assert not any(t.done() for t in [first, *later])  # every caller waits for its write
    inner.gate.set()
    await asyncio.gather(first, *later)
    assert inner.writes[0] == ("a", DAY, "m", "d", {"requests": 1})
    assert sorted(inner.writes[1:]) == [
        ("a", DAY, "m", "d", {"requests": 3, "units": 1 + 2 + 4}),
        ("b", DAY, "m", "d", {"requests": 1, "units": 3}),
    ]
    assert await store.read("a", [DAY]) == {("m", "d"): Counter(requests=4, units=7)}


async def test_a_failure_reaches_exactly_the_callers_whose_records_it_held() -> None:
    inner = Recording()
    store = GroupCommit(inner)
    inner.failing = {"down"}
    inner.gate = asyncio.Event()
    blocker = asyncio.create_task(store.add("up", DAY, "m", "d", {"requests": 1}))
    await asyncio.sleep(0)
    calls = {
        name: asyncio.create_task(store.add(team, DAY, "m", "d", {"requests": 1}))
        for name, team in (("x", "down"), ("y", "down"), ("z", "up"))
    }
    inner.gate.set()
    await blocker
    for name in ("x", "y"):
        with pytest.raises(StoreUnavailable):
            await calls[name]
    await calls["z"]
    assert await store.read("up", [DAY]) == {("m", "d"): Counter(requests=2)}
    # The store keeps working after a failure.
    inner.failing.clear()
    await store.add("down", DAY, "m", "d", {"requests": 1})
    assert await store.read("down", [DAY]) == {("m", "d"): Counter(requests=1)}


async def test_a_caller_that_goes_away_does_not_take_its_record_or_the_batch_with_it() -> None:
    inner = Recording()
    store = GroupCommit(inner)
    inner.gate = asyncio.Event()
    blocker = asyncio.create_task(store.add("a", DAY, "m", "d", {"requests": 1}))
    await asyncio.sleep(0)
    gone = asyncio.create_task(store.add("a", DAY, "m", "d", {"requests": 1}))
    stays = asyncio.create_task(store.add("a", DAY, "m", "d", {"requests": 1}))
    await asyncio.sleep(0)
    gone.cancel()
    inner.gate.set()
    await asyncio.gather(blocker, stays)
    assert gone.cancelled()
    assert await store.read("a", [DAY]) == {("m", "d"): Counter(requests=3)}


async def test_batched_records_land_whole_in_redis(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    store = GroupCommit(BufferedUsageStore(RedisUsageStore(client, redis_prefix, 3)))
    await asyncio.gather(
        *(store.add("t", DAY, "m", f"d{i % 2}", {"requests": 1, "units": i}) for i in range(20))
    )
    found = await store.read("t", [DAY])
    assert found == {
        ("m", "d0"): Counter(requests=10, units=sum(range(0, 20, 2))),
        ("m", "d1"): Counter(requests=10, units=sum(range(1, 20, 2))),
    }
    await client.aclose()
