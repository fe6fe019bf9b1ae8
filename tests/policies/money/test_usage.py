"""Usage buckets in both stores, and the report built from them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest
import redis as redis_sync

from policies.money.redis_usage import RedisUsageStore
from policies.money.usage import MemoryUsageStore, UsageStore, collect, report_range
from tests.support.governance import async_redis


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
        return
    client = async_redis()
    yield RedisUsageStore(client, redis_prefix, retention_days=30)
    await client.aclose()


async def test_report_sums_days_in_range_per_team_model_deployment(store: UsageStore) -> None:
    served = {"requests": 1, "documents": 20, "search_units": 1, "cost_micros": 2_000}
    await store.add("search", "2026-11-04", "rerank-v3.5", "a/rerank-v3.5", served)
    await store.add("search", "2026-11-05", "rerank-v3.5", "a/rerank-v3.5", served)
    await store.add("search", "2026-11-05", "rerank-v3.5", "b/rerank-v3.5", served)
    await store.add("search", "2026-11-05", "rerank-v3.5", "", {"rejected_budget": 1})
    await store.add("search", "2026-11-06", "rerank-v3.5", "a/rerank-v3.5", served)  # after
    await store.add(
        "ads",
        "2026-11-05",
        "rerank-v3.5",
        "",
        {"saved_search_units": 4, "saved_cost_micros": 8_000},
    )
    report = await collect(store, ["ads", "search", "nobody"], date(2026, 11, 4), date(2026, 11, 5))
    rows = {(r["team"], r["deployment"]): r for r in report["rows"]}
    assert set(rows) == {
        ("ads", None),
        ("search", None),
        ("search", "a/rerank-v3.5"),
        ("search", "b/rerank-v3.5"),
    }
    a = rows["search", "a/rerank-v3.5"]
    assert (a["requests"], a["documents"], a["search_units"], a["cost_usd"]) == (2, 40, 2, 0.004)
    assert rows["search", None]["rejected_budget"] == 1
    assert (
        rows["ads", None]["saved_search_units"] == 4
        and rows["ads", None]["saved_cost_usd"] == 0.008
    )
    assert report["totals"]["search"]["requests"] == 3
    assert report["totals"]["search"]["cost_usd"] == 0.006
    assert "nobody" not in report["totals"]
    assert (report["from"], report["to"], report["currency"]) == ("2026-11-04", "2026-11-05", "USD")


async def test_concurrent_records_are_all_counted(store: UsageStore) -> None:
    one = {"requests": 1, "search_units": 3, "cost_micros": 7_500}
    await asyncio.gather(*(store.add("search", "2026-11-05", "m", "d", one) for _ in range(200)))
    slots = await store.read("search", ["2026-11-05"])
    assert dict(slots["m", "d"]) == {"requests": 200, "search_units": 600, "cost_micros": 1_500_000}


def test_redis_buckets_are_hash_tagged_and_expire(
    redis_client: redis_sync.Redis, redis_prefix: str
) -> None:
    async def write() -> None:
        client = async_redis()
        await RedisUsageStore(client, redis_prefix, 30).add(
            "search", "2026-11-05", "m", "p/m", {"requests": 1}
        )
        await client.aclose()

    asyncio.run(write())
    key = f"{redis_prefix}{{search}}:usage:2026-11-05"
    assert redis_client.hgetall(key) == {b"m|p/m|requests": b"1"}
    assert 29 * 86_400 < redis_client.ttl(key) <= 30 * 86_400


def test_report_range_defaults_and_errors() -> None:
    noon = 1793880000.0  # 2026-11-05T12:00:00Z
    assert report_range(None, None, noon) == (date(2026, 11, 1), date(2026, 11, 5))
    assert report_range("2026-10-01", "2026-10-31", noon) == (date(2026, 10, 1), date(2026, 10, 31))
    with pytest.raises(ValueError, match="from must be a date as YYYY-MM-DD"):
        report_range("yesterday", None, noon)
    with pytest.raises(ValueError, match="is after to"):
        report_range("2026-11-06", "2026-11-05", noon)
    with pytest.raises(ValueError, match="at most 400 days"):
        report_range("2020-01-01", "2026-01-01", noon)


async def test_memory_buckets_past_retention_are_dropped() -> None:
    store = MemoryUsageStore(retention_days=2)
    await store.add("search", "2026-11-01", "m", "d", {"requests": 1})
    await store.add("search", "2026-11-02", "m", "d", {"requests": 1})
    await store.add("search", "2026-11-03", "m", "d", {"requests": 1})  # drops the 1st
    assert await store.read("search", ["2026-11-01"]) == {}
    kept = await store.read("search", ["2026-11-02", "2026-11-03"])
    assert kept["m", "d"]["requests"] == 2


def test_day_of_is_the_utc_calendar_day_at_the_boundaries() -> None:
    from datetime import UTC, datetime

    from policies.money.usage import day_of

    for t in (0.0, 86_399.999, 86_400.0, 1_798_761_599.5, 1_798_761_600.0):
        assert day_of(t) == datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
    assert day_of(1_798_761_599.5) == "2026-12-31" and day_of(1_798_761_600.0) == "2027-01-01"
