"""When the limits store (Redis) goes down: rate limits fail open, budgets fail closed, by
default; both are configurable. Uses a redis-server of its own, stopped mid-test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.calls import post
from tests.support.governance import get, governed
from tests.support.redis_server import OwnRedis

BODY = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "bananas"]}


def config(upstream: str, own_redis: OwnRedis, on_redis_error: dict[str, str]) -> dict[str, Any]:
    return governed(
        {"cohere-a": upstream},
        backend="redis",
        prefix="rg-down:",
        state={"redis_url": own_redis.url},
        search={"budget": {"usd_per_day": 10}},
        ads={"rate_limit": {"requests_per_minute": 100}},
        limits={"on_redis_error": on_redis_error},
    )


@pytest.mark.parametrize(
    ("on_redis_error", "search_status", "ads_status"),
    [
        ({}, 503, 200),  # defaults: budgets closed, rate limits open
        ({"budget": "open"}, 200, 200),
        ({"rate_limit": "closed", "budget": "open"}, 200, 503),
    ],
)
async def test_store_down_fails_open_or_closed_as_configured(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    own_redis: OwnRedis,
    on_redis_error: dict[str, str],
    search_status: int,
    ads_status: int,
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(config(upstream, own_redis, on_redis_error))
    assert (await post(url, BODY, TEAM_KEY))[0] == 200
    assert (await post(url, BODY, OTHER_TEAM_KEY))[0] == 200
    own_redis.stop()
    calls = len(fake.calls)
    status, headers, answer = await post(url, BODY, TEAM_KEY)
    assert status == search_status
    if status == 503:
        assert headers["Retry-After"] == "5"
        assert answer["message"] == (
            "cannot check the budgets of team 'search' right now: the limits store (Redis) is "
            "unreachable and they are configured to fail closed (limits.on_redis_error); retry "
            "shortly"
        )
    status, headers, answer = await post(url, BODY, OTHER_TEAM_KEY)
    assert status == ads_status
    if status == 503:
        assert headers["Retry-After"] == "5"
        assert "cannot check the rate limits of team 'ads'" in answer["message"]
    assert len(fake.calls) == calls + [search_status, ads_status].count(200)
    status, headers, answer = await get(url + "/admin/usage", ADMIN_KEY)
    assert status == 503 and headers["Retry-After"] == "5"
    assert "usage store (Redis) is unreachable" in answer["message"]


async def test_fail_open_counts_on_this_replica_while_redis_is_down(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], own_redis: OwnRedis
) -> None:
    _, upstream = fake_cohere
    data = governed(
        {"cohere-a": upstream},
        backend="redis",
        prefix="rg-down-local:",
        state={"redis_url": own_redis.url},
        ads={"rate_limit": {"requests_per_minute": 3}},
    )
    url = start_gateway(data)
    assert (await post(url, BODY, OTHER_TEAM_KEY))[0] == 200  # counted in Redis
    own_redis.stop()
    # Redis is down, the rate limit fails open: this replica's counters take over, so the
    # limit still holds (per replica) instead of admitting everything uncounted.
    statuses = [(await post(url, BODY, OTHER_TEAM_KEY))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    own_redis.start()  # an empty Redis (it keeps nothing on disk)
    # Redis is back and decides again: its fresh counter admits a full allowance.
    statuses = [(await post(url, BODY, OTHER_TEAM_KEY))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
