"""Rate limits shared by replicas through one real Redis: exact whatever the replicas'
clocks say and right after Redis lost its scripts, with every refusal's Retry-After the
real time to the next admission (rounded up), never earlier.

Redis's own clock (`TIME`) decides, so the checks read it around a burst instead of
sleeping: `t0`..`t1` bound when each reservation ran. A private redis-server is used,
since SCRIPT FLUSH would reach every other test on the shared one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis as redis_sync

from policies.money.quota import RATE_LIMIT, Hold, MemoryQuotaStore, QuotaStore, Refusal, TeamQuota
from policies.money.ratelimit import Gcra, RateLimitConfig
from policies.money.redis_quota import RedisQuotaStore
from tests.conftest import OTHER_TEAM_KEY
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.governance import async_redis, governed
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop

PREFIX = "rg-replicas:"
NOON = 1_793_880_000.0
SMALL = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "x"]}


def redis_time_us(client: redis_sync.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def next_admission_us(client: redis_sync.Redis, team: str, gcra: Gcra) -> int:
    """When the requests limit admits one more (Redis time, us), from its stored TAT."""
    tat = int(client.hget(f"{PREFIX}{{{team}}}:gcra", gcra.name))
    return tat + gcra.interval_us - gcra.window_us


def quota(rpm: int | None = None, upm: int | None = None) -> TeamQuota:
    team_quota = TeamQuota.of("ads", RateLimitConfig(rpm, upm), None)
    assert team_quota is not None
    return team_quota


# --- two replicas' stores -------------------------------------------------------------


@pytest.mark.parametrize("flush", [False, True])
async def test_replicas_with_skewed_clocks_admit_exactly_the_limit(
    own_redis: OwnRedis, flush: bool
) -> None:
    """Was one too few after SCRIPT FLUSH, with every refusal saying "retry in 0.0 s":
    each replica passed its own `now`, and the reload reordered the calls."""
    sync = redis_sync.Redis.from_url(own_redis.url)
    clients = [async_redis(own_redis.url), async_redis(own_redis.url)]
    stores = [RedisQuotaStore(c, PREFIX) for c in clients]
    q, skews = quota(rpm=6), [+45.0, -45.0]  # replica clocks 90 s apart: Redis's decides
    if flush:
        sync.script_flush()
    t0 = redis_time_us(sync)
    refusals = await asyncio.gather(
        *(stores[i % 2].reserve(q.request(1, 0, time.time() + skews[i % 2])) for i in range(18))
    )
    t1 = redis_time_us(sync)
    gcra = q.requests
    assert gcra is not None
    admitted = sum(isinstance(r, Hold) for r in refusals)
    freed = (t1 - t0) // gcra.interval_us  # cells Redis's clock itself freed meanwhile
    assert 6 <= admitted <= 6 + freed
    refused = [r for r in refusals if isinstance(r, Refusal)]
    assert refused and all(r.kind == RATE_LIMIT for r in refused)
    if admitted == 6:  # nothing freed: every refusal waits for the same next admission
        after = next_admission_us(sync, "ads", gcra)
        for r in refused:
            assert r.retry_after_s.is_integer()  # whole seconds, as Retry-After
            assert r.retry_after_s * 1_000_000 >= after - t1  # never earlier
            assert r.retry_after_s <= math.ceil((after - t0) / 1_000_000)  # and no later
    for client in clients:
        await client.aclose()


async def test_a_settle_after_script_flush_counts_once(own_redis: OwnRedis) -> None:
    sync = redis_sync.Redis.from_url(own_redis.url)
    client = async_redis(own_redis.url)
    store = RedisQuotaStore(client, PREFIX)
    q = quota(upm=60)
    first = q.request(10, 0, time.time())
    hold = await store.reserve(first)
    assert isinstance(hold, Hold)
    before = int(sync.hget(f"{PREFIX}{{ads}}:gcra", "search_units_per_minute"))
    sync.script_flush()
    await store.adjust(first, hold, -4, 0)  # NOSCRIPT, reload, run: once
    after = int(sync.hget(f"{PREFIX}{{ads}}:gcra", "search_units_per_minute"))
    assert before - after == 4 * 1_000_000
    await client.aclose()


# --- the arithmetic both stores share, on a fake clock ----------------------------------


@pytest.fixture(params=["memory", "redis"])
async def stores(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[Callable[[], QuotaStore]]:
    """A factory of stores that share state (two replicas of one store kind)."""
    if request.param == "memory":
        shared = MemoryQuotaStore()
        yield lambda: shared
        return
    client = async_redis()
    yield lambda: RedisQuotaStore(client, redis_prefix, server_time=False)
    await client.aclose()


async def test_retry_after_is_the_longest_wait_over_every_limit(
    stores: Callable[[], QuotaStore],
) -> None:
    """Was the wait of the first limit that refused: the requests limit's 15 s while the
    search-units limit would refuse for 30 s."""
    a, b = stores(), stores()
    q, clock = quota(rpm=4, upm=2), FakeClock(NOON)
    for units in (1, 1, 0, 0):  # both limits full: requests 4 of 4, units 2 of 2
        assert isinstance(await a.reserve(q.request(units, 0, clock())), Hold)
    refusal = await b.reserve(q.request(1, 0, clock()))
    assert refusal is not None and refusal.limit == "search_units_per_minute"
    assert refusal.retry_after_s == 30.0  # requests would admit in 15 s, units in 30 s
    clock.advance(29)
    assert isinstance(await b.reserve(q.request(1, 0, clock())), Refusal)  # a second early
    clock.advance(1)
    assert isinstance(await a.reserve(q.request(1, 0, clock())), Hold)  # exactly when it said


@pytest.mark.parametrize("rpm", [4, 7, 13])
async def test_every_refusal_in_a_burst_names_the_real_next_admission(
    stores: Callable[[], QuotaStore], rpm: int
) -> None:
    a, b = stores(), stores()
    q, clock = quota(rpm=rpm), FakeClock(NOON + 0.25)
    results = [await (a if i % 2 else b).reserve(q.request(1, 0, clock())) for i in range(rpm * 2)]
    assert sum(isinstance(r, Hold) for r in results) == rpm  # exactly the limit
    waits = {r.retry_after_s for r in results if isinstance(r, Refusal)}
    interval = 60 / rpm
    assert waits == {float(math.ceil(interval - 1e-9))}  # whole seconds, never 0
    wait = waits.pop()
    clock.advance(wait - 1)
    assert isinstance(await a.reserve(q.request(1, 0, clock())), Refusal)  # a second early: refused
    clock.advance(1)
    assert isinstance(await b.reserve(q.request(1, 0, clock())), Hold)  # at Retry-After: admitted


# --- two gateway apps through HTTP ----------------------------------------------------


async def test_two_gateways_share_an_exact_limit_after_script_flush(
    servers: ServerLoop, start_gateway: Callable[..., str], own_redis: OwnRedis
) -> None:
    fake = FakeCohere(faults=Faults(delay_s=0.01))  # keep requests in flight together
    data = governed(
        {"cohere-a": servers.serve(fake.app())},
        backend="redis",
        prefix=PREFIX,
        state={"redis_url": own_redis.url},
        ads={"rate_limit": {"requests_per_minute": 6}},
    )
    urls = [start_gateway(data), start_gateway(data)]
    sync = redis_sync.Redis.from_url(own_redis.url)
    sync.script_flush()  # as after a Redis restart: both gateways must reload the script
    t0 = redis_time_us(sync)
    results = await asyncio.gather(*(post(urls[i % 2], SMALL, OTHER_TEAM_KEY) for i in range(18)))
    t1 = redis_time_us(sync)
    gcra = Gcra("requests_per_minute", 6)
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert 6 <= len(admitted) <= 6 + (t1 - t0) // gcra.interval_us
    assert len(fake.calls) == len(admitted)
    assert {status for status, _, _ in refused} == {429}
    after = next_admission_us(sync, "ads", gcra)
    for _, raw_headers, answer in refused:
        headers = {name.lower(): value for name, value in raw_headers.items()}
        retry_after = int(headers["retry-after"])
        assert answer["id"] == headers["x-request-id"]
        assert "retry in 0.0 s" not in answer["message"]
        if len(admitted) == 6:
            assert retry_after * 1_000_000 >= after - t1  # never before the next admission
            assert retry_after <= math.ceil((after - t0) / 1_000_000)
