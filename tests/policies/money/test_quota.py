"""Rate limits (GCRA) and budget reservations, on a fake clock, in both stores.

Every behaviour runs against the memory store and the Redis store (its Lua scripts on
the real Redis), so the two implementations cannot drift apart.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis as redis_sync

from policies.money.budget import BudgetConfig, windows
from policies.money.quota import (
    BUDGET,
    RATE_LIMIT,
    Hold,
    MemoryQuotaStore,
    QuotaStore,
    Refusal,
    TeamQuota,
)
from policies.money.ratelimit import Gcra, RateLimitConfig, retry_seconds, to_us
from policies.money.redis_quota import RedisQuotaStore
from tests.conftest import spend_in_redis
from tests.fakes.clock import FakeClock
from tests.support.governance import async_redis

NOON = datetime(2026, 11, 5, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 6, tzinfo=UTC).timestamp()


def test_gcra_bursts_a_minute_then_paces() -> None:
    gcra, now = Gcra("requests_per_minute", 60), to_us(NOON)
    tat = None
    for _ in range(60):
        verdict = gcra.check(tat, now, 1)
        assert verdict.allowed
        tat = verdict.tat_us
    refused = gcra.check(tat, now, 1)
    assert not refused.allowed and refused.wait_us == 1_000_000
    assert gcra.check(tat, now + 1_000_000, 1).allowed
    # After a quiet spell the bucket is full again, not fuller.
    assert gcra.check(tat, now + 3600 * 1_000_000, 60).allowed
    assert not gcra.check(tat, now + 3600 * 1_000_000, 61).allowed
    assert not gcra.fits_ever(61) and gcra.fits_ever(60)


@pytest.mark.parametrize("per_minute", [1, 7, 13, 60, 997, 1000, 65_537])
def test_a_burst_admits_exactly_the_limit_whatever_the_rounding(per_minute: int) -> None:
    """Was one too few for limits like 7/min: a 60 s window / 7 rounded to 3 decimals of
    a millisecond made the 7th cell 0.003 ms over (and "retry in 0.0 s")."""
    gcra, now = Gcra("requests_per_minute", per_minute), to_us(NOON) + 123_457
    tat, admitted = None, 0
    while (verdict := gcra.check(tat, now, 1)).allowed:
        tat, admitted = verdict.tat_us, admitted + 1
    assert admitted == per_minute
    assert verdict.wait_us == gcra.interval_us  # one cell away, exactly
    assert retry_seconds(verdict.wait_us) == math.ceil(gcra.interval_us / 1e6)


def test_budget_windows_are_utc_day_and_month() -> None:
    day, month = windows(BudgetConfig(usd_per_day=1.5, usd_per_month=20), NOON)
    assert (day.name, day.period, day.limit_micros) == ("usd_per_day", "2026-11-05", 1_500_000)
    assert day.resets_at == MIDNIGHT
    assert (month.name, month.period) == ("usd_per_month", "2026-11")
    assert month.resets_at == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    december = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    assert windows(BudgetConfig(usd_per_month=1), december)[0].resets_at == (
        datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    )


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[QuotaStore]:
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    client = async_redis()
    yield RedisQuotaStore(client, redis_prefix, server_time=False)
    await client.aclose()


def quota(
    rpm: int | None = None, upm: int | None = None, day: float | None = None, **budget
) -> TeamQuota:
    rate = RateLimitConfig(rpm, upm) if rpm or upm else None
    money = BudgetConfig(usd_per_day=day, **budget) if day is not None or budget else None
    team_quota = TeamQuota.of("search", rate, money)
    assert team_quota is not None
    return team_quota


async def test_requests_per_minute(store: QuotaStore) -> None:
    q, clock = quota(rpm=3), FakeClock(NOON)
    for _ in range(3):
        assert isinstance(await store.reserve(q.request(1, 0, clock())), Hold)
    refusal = await store.reserve(q.request(1, 0, clock()))
    assert refusal is not None
    assert (refusal.kind, refusal.limit) == (RATE_LIMIT, "requests_per_minute")
    assert refusal.retry_after_s == pytest.approx(20.0)
    clock.advance(19.9)
    assert isinstance(await store.reserve(q.request(1, 0, clock())), Refusal)
    clock.advance(0.1)
    assert isinstance(await store.reserve(q.request(1, 0, clock())), Hold)


async def test_search_units_per_minute_with_settle_and_refund(store: QuotaStore) -> None:
    q, now = quota(upm=10), NOON
    first = q.request(6, 0, now)
    first_hold = await store.reserve(first)
    assert isinstance(first_hold, Hold)
    refusal = await store.reserve(q.request(5, 0, now))
    assert refusal is not None and refusal.limit == "search_units_per_minute"
    assert refusal.retry_after_s == pytest.approx(6.0)  # one unit's interval
    await store.adjust(first, first_hold, -2, 0)  # settled: the upstream billed 4, not 6
    assert isinstance(await store.reserve(q.request(6, 0, now)), Hold)  # 4 + 6 = 10
    assert isinstance(await store.reserve(q.request(1, 0, now)), Refusal)


async def test_daily_budget_reserve_refuse_and_reset(store: QuotaStore) -> None:
    q, clock = quota(day=0.01), FakeClock(NOON)  # $0.01 = 10,000 micro-dollars
    assert isinstance(await store.reserve(q.request(2, 4_000, clock())), Hold)
    assert isinstance(await store.reserve(q.request(2, 4_000, clock())), Hold)
    refusal = await store.reserve(q.request(1, 4_000, clock()))
    assert refusal is not None
    assert (refusal.kind, refusal.limit, refusal.spent_micros) == (BUDGET, "usd_per_day", 8_000)
    assert refusal.retry_after_s == pytest.approx(MIDNIGHT - NOON)
    assert isinstance(await store.reserve(q.request(1, 2_000, clock())), Hold)  # exactly fills it
    assert isinstance(await store.reserve(q.request(1, 1, clock())), Refusal)
    clock.now = MIDNIGHT  # a new day
    assert isinstance(await store.reserve(q.request(1, 10_000, clock())), Hold)


async def test_refund_and_settle_move_the_budget(store: QuotaStore) -> None:
    q = quota(day=0.01)
    failed = q.request(1, 6_000, NOON)
    failed_hold = await store.reserve(failed)
    assert isinstance(failed_hold, Hold)
    await store.adjust(failed, failed_hold, -1, -6_000)  # the upstream failed: refund
    served = q.request(1, 6_000, NOON)
    served_hold = await store.reserve(served)
    assert isinstance(served_hold, Hold)
    await store.adjust(served, served_hold, 0, -5_000)  # it cost 1,000 in the end
    assert isinstance(await store.reserve(q.request(1, 9_000, NOON)), Hold)
    assert isinstance(await store.reserve(q.request(1, 1, NOON)), Refusal)


async def test_monthly_budget_alongside_the_daily_one(store: QuotaStore) -> None:
    q = quota(day=0.01, usd_per_month=0.015)
    assert isinstance(await store.reserve(q.request(1, 10_000, NOON)), Hold)
    tomorrow = MIDNIGHT + 60
    refusal = await store.reserve(q.request(1, 6_000, tomorrow))
    assert refusal is not None and refusal.limit == "usd_per_month"
    assert refusal.spent_micros == 10_000
    assert isinstance(await store.reserve(q.request(1, 5_000, tomorrow)), Hold)


async def test_reservation_is_all_or_nothing(store: QuotaStore) -> None:
    q = quota(rpm=2, day=0.001)
    assert isinstance(await store.reserve(q.request(1, 1_000, NOON)), Hold)  # budget now full
    refusal = await store.reserve(q.request(1, 1_000, NOON))
    assert refusal is not None and refusal.kind == BUDGET
    # The refused request took no rate: one request is still left this minute.
    assert isinstance(await store.reserve(q.request(1, 1_000, NOON, enforce_budget=False)), Hold)
    refusal = await store.reserve(q.request(1, 0, NOON, enforce_budget=False))
    assert refusal is not None and refusal.kind == RATE_LIMIT


async def test_settle_after_the_period_ended_leaves_the_new_one_alone(store: QuotaStore) -> None:
    q = quota(day=0.01)
    late = q.request(1, 5_000, MIDNIGHT - 1)
    late_hold = await store.reserve(late)
    assert isinstance(late_hold, Hold)
    assert isinstance(await store.reserve(q.request(1, 10_000, MIDNIGHT + 1)), Hold)  # new day, full
    await store.adjust(late, late_hold, -1, -5_000)  # refund of yesterday's reservation
    assert isinstance(await store.reserve(q.request(1, 1, MIDNIGHT + 2)), Refusal)


# Redis only: the Lua scripts under concurrency, and the key layout.


@pytest.fixture
async def redis_store(redis_prefix: str) -> AsyncIterator[RedisQuotaStore]:
    client = async_redis()
    yield RedisQuotaStore(client, redis_prefix, server_time=False)
    await client.aclose()


async def test_concurrent_budget_reservations_never_overshoot(
    redis_store: RedisQuotaStore, redis_client: redis_sync.Redis, redis_prefix: str
) -> None:
    q = quota(day=0.05)  # 50,000 micro-dollars
    rng = random.Random(7)
    costs = [rng.choice([1_000, 2_000, 3_000]) for _ in range(300)]
    refusals = await asyncio.gather(*(redis_store.reserve(q.request(1, c, NOON)) for c in costs))
    admitted = sum(c for c, r in zip(costs, refusals, strict=True) if isinstance(r, Hold))
    assert admitted <= 50_000
    assert admitted >= 50_000 - 3_000  # it filled up: only a last too-big one was refused
    assert spend_in_redis(redis_client, redis_prefix, "search", "2026-11-05") == admitted


async def test_concurrent_rate_limit_admits_exactly_the_limit(
    redis_store: RedisQuotaStore,
) -> None:
    q = quota(rpm=30)
    refusals = await asyncio.gather(
        *(redis_store.reserve(q.request(1, 0, NOON)) for _ in range(100))
    )
    assert sum(isinstance(r, Hold) for r in refusals) == 30


async def test_concurrent_reserve_and_settle_account_exactly(
    redis_store: RedisQuotaStore, redis_client: redis_sync.Redis, redis_prefix: str
) -> None:
    q = quota(day=100.0)
    rng = random.Random(11)

    async def one(i: int) -> int:
        request = q.request(2, 4_000, NOON)
        hold = await redis_store.reserve(request)
        assert isinstance(hold, Hold)
        await asyncio.sleep(0)
        if i % 3 == 0:
            await redis_store.adjust(request, hold, -2, -4_000)  # failed upstream: refund
            return 0
        real = rng.choice([1_000, 4_000, 6_000])
        await redis_store.adjust(request, hold, 0, real - 4_000)
        return real

    settled = await asyncio.gather(*(one(i) for i in range(150)))
    assert spend_in_redis(redis_client, redis_prefix, "search", "2026-11-05") == sum(settled)


async def test_keys_are_hash_tagged_per_team_and_expire(
    redis_store: RedisQuotaStore, redis_client: redis_sync.Redis, redis_prefix: str
) -> None:
    q = quota(rpm=5, upm=50, day=1.0, usd_per_month=10.0)
    assert isinstance(await redis_store.reserve(q.request(3, 1_000, NOON)), Hold)
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=redis_prefix + "*"))
    assert keys == [
        f"{redis_prefix}{{search}}:gcra",
        f"{redis_prefix}{{search}}:spend:2026-11",
        f"{redis_prefix}{{search}}:spend:2026-11-05",
    ]
    assert all(redis_client.ttl(k) > 0 for k in keys)
    rate = {k.decode(): int(v) for k, v in redis_client.hgetall(keys[0]).items()}
    assert rate == {  # integer microseconds
        "requests_per_minute": int(NOON + 12) * 1_000_000,
        "search_units_per_minute": int(NOON) * 1_000_000 + 3_600_000,
    }
