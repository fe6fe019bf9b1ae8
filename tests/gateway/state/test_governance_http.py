"""Rate limits, budgets, pricing and usage through the HTTP API of an in-process gateway."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_sync
from aiohttp import web

from policies.money.billing import BillingRules
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, spend_in_redis
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.governance import get, governed, metrics_text, tiered
from tests.support.servers import ServerLoop

BODY = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "bananas"]}
BACKENDS = ["memory", "redis"]


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    return (
        now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now
    ).total_seconds()


async def usage_rows(url: str, **query: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    status, _, report = await get(
        url + "/admin/usage?" + "&".join(f"{k}={v}" for k, v in query.items()), ADMIN_KEY
    )
    assert status == 200, report
    return {(r["team"], r["deployment"]): r for r in report["rows"]}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_requests_per_minute_429_with_retry_after(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    redis_prefix: str,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(
        governed(
            {"cohere-a": upstream},
            backend=backend,
            prefix=redis_prefix,
            search={"rate_limit": {"requests_per_minute": 2}},
        )
    )
    assert [(await post(url, BODY, TEAM_KEY))[0] for _ in range(2)] == [200, 200]
    status, headers, answer = await post(url, BODY, TEAM_KEY)
    assert status == 429
    assert 29 <= int(headers["Retry-After"]) <= 30
    assert re.fullmatch(
        r"rate limit exceeded: team 'search' may use 2 requests per minute "
        r"\(rate_limit\.requests_per_minute\); retry in \d+ s",
        answer["message"],
    )
    assert len(fake.calls) == 2
    assert (await post(url, BODY, OTHER_TEAM_KEY))[0] == 200  # other teams are not limited
    text = await metrics_text(url)
    assert (
        'rerank_ratelimit_rejections_total{limit="requests_per_minute",team="search"} 1.0' in text
    )
    assert (await usage_rows(url))["search", None]["rejected_rate_limit"] == 1


async def test_search_units_per_minute(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    url = start_gateway(
        governed(
            {"cohere-a": upstream},
            search={"rate_limit": {"search_units_per_minute": 3}},
            limits={"max_documents": 1000},
        )
    )
    big = {**BODY, "documents": [f"doc {i}" for i in range(250)]}  # 3 units
    assert (await post(url, big, TEAM_KEY))[0] == 200
    status, headers, answer = await post(url, BODY, TEAM_KEY)
    assert status == 429 and "may use 3 search units per minute" in answer["message"]
    assert 19 <= int(headers["Retry-After"]) <= 20  # one unit's interval
    huge = {**BODY, "documents": [f"doc {i}" for i in range(301)]}  # 4 units: never fits
    status, _, answer = await post(url, huge, OTHER_TEAM_KEY)
    assert status == 200  # ads has no limit
    status, _, answer = await post(url, huge, TEAM_KEY)
    assert status == 400
    assert answer["message"] == (
        "invalid request: this request needs about 4 search units, more than team 'search' may "
        "use in a minute (rate_limit.search_units_per_minute=3); send fewer or shorter documents"
    )


async def test_failover_is_one_request_against_the_rate_limit(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    first, second = FakeCohere(faults=Faults(status=503)), FakeCohere()
    url = start_gateway(
        governed(
            {"first": servers.serve(first.app()), "second": servers.serve(second.app())},
            search={"rate_limit": {"requests_per_minute": 1}},
        )
    )
    status, headers, _ = await post(url, BODY, TEAM_KEY)
    assert status == 200 and headers["X-Rerank-Deployment"] == "second/rerank-v3.5"
    assert (len(first.calls), len(second.calls)) == (1, 1)
    assert (await post(url, BODY, TEAM_KEY))[0] == 429


@pytest.mark.parametrize("backend", BACKENDS)
async def test_daily_budget_exhausted_says_which_and_when(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    redis_prefix: str,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(
        governed(
            {"cohere-a": upstream},
            backend=backend,
            prefix=redis_prefix,
            search={"budget": {"usd_per_day": 0.004}},
        )  # two requests at $0.002
    )
    assert [(await post(url, BODY, TEAM_KEY))[0] for _ in range(2)] == [200, 200]
    status, headers, answer = await post(url, BODY, TEAM_KEY)
    assert status == 402  # not 429: the SDKs would retry that for minutes in vain
    assert abs(int(headers["Retry-After"]) - seconds_to_midnight()) < 10
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert answer["message"].startswith(
        "budget exhausted: team 'search' has spent $0.004 of its daily budget of $0.004 "
        f"(budget.usd_per_day) and this request needs about $0.002; the budget resets at "
        f"{tomorrow}T00:00:00Z (in "
    )
    assert len(fake.calls) == 2
    text = await metrics_text(url)
    assert 'rerank_budget_rejections_total{budget="usd_per_day",team="search"} 1.0' in text
    rows = await usage_rows(url)
    assert rows["search", None]["rejected_budget"] == 1
    assert rows["search", "cohere-a/rerank-v3.5"]["cost_usd"] == 0.004


@pytest.mark.parametrize("backend", BACKENDS)
async def test_budget_is_refunded_when_the_upstream_fails(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    redis_prefix: str,
    redis_client: redis_sync.Redis,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    fake.faults = Faults(status=503, times=1)
    data = governed(
        {"cohere-a": upstream},
        backend=backend,
        prefix=redis_prefix,
        search={"budget": {"usd_per_day": 0.002}},
    )  # exactly one request
    data["models"]["rerank-v3.5"]["max_attempts"] = 1  # no retry: the failure reaches the caller
    url = start_gateway(data)
    assert (await post(url, BODY, TEAM_KEY))[0] == 503
    assert (await post(url, BODY, TEAM_KEY))[0] == 200  # the failed one was refunded
    assert (await post(url, BODY, TEAM_KEY))[0] == 402
    assert len(fake.calls) == 2
    if backend == "redis":
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        assert spend_in_redis(redis_client, redis_prefix, "search", day) == 2000
    rows = await usage_rows(url)
    assert rows["search", "cohere-a/rerank-v3.5"]["requests"] == 1


async def test_settle_uses_billed_units_and_the_serving_deployments_price(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    dear, cheap = FakeCohere(faults=Faults(status=503)), FakeCohere()
    data = governed(
        {"dear": servers.serve(dear.app()), "cheap": servers.serve(cheap.app())},
        search={"budget": {"usd_per_day": 0.012}},
        pricing={"models": {"rerank-v3.5": {"providers": {"dear": 10.0, "cheap": 1.0}}}},
    )
    url = start_gateway(data)
    # Each request reserves $0.01 (the dearest deployment's price) and settles to $0.001 on
    # `cheap`: without the settle the second one would not fit the $0.012 budget.
    for _ in range(3):
        status, headers, answer = await post(url, BODY, TEAM_KEY)
        assert status == 200 and headers["X-Rerank-Deployment"] == "cheap/rerank-v3.5"
    rows = await usage_rows(url)
    assert rows["search", "cheap/rerank-v3.5"]["cost_usd"] == 0.003
    text = await metrics_text(url)
    assert (
        'rerank_cost_usd_total{deployment="cheap/rerank-v3.5",model="rerank-v3.5",team="search"} 0.003'
        in text
    )
    # Long documents: the estimate (2 units) is more than Cohere bills (1); the bill wins.
    long_docs = {**BODY, "documents": ["word " * 1600] * 40}
    status, _, answer = await post(url, long_docs, OTHER_TEAM_KEY)
    assert status == 200 and answer["meta"]["billed_units"] == {"search_units": 1}
    rows = await usage_rows(url, team="ads")
    assert rows["ads", "cheap/rerank-v3.5"]["search_units"] == 1


async def test_estimate_is_billed_when_the_upstream_reports_nothing(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    async def silent(request: web.Request) -> web.Response:  # Bedrock/OCI-like: no usage
        body = await request.json()
        return web.json_response(
            {
                "results": [
                    {"index": i, "relevance_score": 0.5} for i in range(len(body["documents"]))
                ]
            }
        )

    app = web.Application()
    app.router.add_post("/v2/rerank", silent)
    url = start_gateway(governed({"silent": servers.serve(app)}, limits={"max_documents": 500}))
    body = {**BODY, "documents": ["short"] * 150 + ["word " * 1600] * 10}  # 150 + 50 chunks
    status, _, answer = await post(url, body, TEAM_KEY)
    assert status == 200 and answer["meta"]["billed_units"] == {"search_units": 2}
    rows = await usage_rows(url)
    assert rows["search", "silent/rerank-v3.5"]["search_units"] == 2
    assert rows["search", "silent/rerank-v3.5"]["cost_usd"] == 0.004
    text = await metrics_text(url)
    assert (
        'rerank_search_units_total{deployment="silent/rerank-v3.5",model="rerank-v3.5",team="search"} 2.0'
        in text
    )


async def test_budget_downgrade_serves_the_fast_tier(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(
        tiered(upstream, search={"budget": {"usd_per_day": 0.0025, "on_exhausted": "downgrade"}})
    )
    body = {**BODY, "model": "rerank-4"}
    status, headers, answer = await post(url, body, TEAM_KEY)
    assert status == 200 and headers["X-Rerank-Model"] == "rerank-v4.0-pro"
    assert "warnings" not in answer["meta"]
    status, headers, answer = await post(url, body, TEAM_KEY)
    assert status == 200 and headers["X-Rerank-Model"] == "rerank-v4.0-fast"
    assert fake.calls[-1]["model"] == "rerank-v4.0-fast"
    assert answer["meta"]["warnings"] == [
        "team 'search' has used its daily budget (budget.usd_per_day): served by the fast tier "
        "'rerank-v4.0-fast' of 'rerank-4' instead of 'rerank-v4.0-pro'"
    ]
    # A concrete model has no cheaper tier: refused.
    status, _, answer = await post(url, {**body, "model": "rerank-v4.0-pro"}, TEAM_KEY)
    assert status == 402 and answer["message"].startswith("budget exhausted")
    rows = {
        (r["model"], r["deployment"]): r
        for r in (await get(url + "/admin/usage", ADMIN_KEY))[2]["rows"]
    }
    assert rows["rerank-v4.0-fast", None]["downgraded"] == 1
    assert rows["rerank-v4.0-fast", "cohere-a/rerank-v4.0-fast"]["cost_usd"] == 0.002
    assert rows["rerank-v4.0-pro", "cohere-a/rerank-v4.0-pro"]["cost_usd"] == 0.0025
    text = await metrics_text(url)
    assert 'rerank_budget_downgrades_total{budget="usd_per_day",team="search"} 1.0' in text


async def test_budget_reject_on_a_tiered_alias(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    url = start_gateway(tiered(upstream, search={"budget": {"usd_per_day": 0.0025}}))
    body = {**BODY, "model": "rerank-4"}
    assert (await post(url, body, TEAM_KEY))[0] == 200
    assert (await post(url, body, TEAM_KEY))[0] == 402


async def test_usage_endpoint_needs_the_admin_key_and_reports(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    url = start_gateway(governed({"cohere-a": upstream}))
    for key in (TEAM_KEY, TEAM_KEY, OTHER_TEAM_KEY):
        assert (await post(url, BODY, key))[0] == 200
    assert (await get(url + "/admin/usage"))[0] == 401
    status, _, answer = await get(url + "/admin/usage", "wrong")
    assert (status, answer["message"]) == (401, "invalid admin key")
    assert (await get(url + "/admin/usage", TEAM_KEY))[0] == 401
    status, _, report = await get(url + "/admin/usage?team=search", ADMIN_KEY)
    assert status == 200
    today = datetime.now(UTC).date()
    assert report["from"] == today.replace(day=1).isoformat() and report["to"] == today.isoformat()
    assert report["scope"] == "this process"
    assert report["rows"] == [
        {
            "team": "search",
            "model": "rerank-v3.5",
            "deployment": "cohere-a/rerank-v3.5",
            "requests": 2,
            "documents": 4,
            "search_units": 2,
            "tokens": 2 * BillingRules().estimate_tokens(BODY["query"], BODY["documents"]),
            "cost_usd": 0.004,
            "saved_search_units": 0,
            "saved_tokens": 0,
            "saved_cost_usd": 0.0,
            "cache_hits": 0,
            "replayed": 0,
            "replayed_cost_usd": 0.0,
            "rejected_limits": 0,
            "rejected_rate_limit": 0,
            "rejected_budget": 0,
            "truncated": 0,
            "downgraded": 0,
            "unit": "search_units",
            "billed_units": 2,
        }
    ]
    status, _, report = await get(url + "/admin/usage", ADMIN_KEY)
    assert set(report["totals"]) == {"ads", "search"}
    yesterday = (today - timedelta(days=1)).isoformat()
    status, _, report = await get(url + f"/admin/usage?from=2020-01-01&to={yesterday}", ADMIN_KEY)
    assert status == 400 and "at most 400 days" in report["message"]
    status, _, report = await get(url + f"/admin/usage?from={yesterday}&to={yesterday}", ADMIN_KEY)
    assert status == 200 and report["rows"] == []
    status, _, report = await get(url + "/admin/usage?from=11/05/2026", ADMIN_KEY)
    assert status == 400 and "from must be a date as YYYY-MM-DD" in report["message"]
    status, _, report = await get(url + "/admin/usage?team=marketing", ADMIN_KEY)
    assert status == 404 and "unknown team 'marketing'" in report["message"]


async def test_usage_endpoint_is_403_without_an_admin_key_configured(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    data = governed({"cohere-a": fake_cohere[1]})
    data["auth"] = {"mode": "keys"}
    url = start_gateway(data)
    status, _, answer = await get(url + "/admin/usage", ADMIN_KEY)
    assert status == 403 and "admin routes are disabled" in answer["message"]


async def test_cache_hits_are_reported_as_savings_not_spend(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(governed({"cohere-a": upstream}, cache={"backend": "memory"}))
    docs = [f"document {i}" for i in range(60)]
    for _ in range(4):  # one miss, then three full hits
        status, headers, _ = await post(url, {**BODY, "documents": docs}, TEAM_KEY)
        assert status == 200
    assert headers["X-Cache"] == "hit" and len(fake.calls) == 1
    rows = await usage_rows(url)
    assert rows["search", "cohere-a/rerank-v3.5"]["requests"] == 1
    assert rows["search", "cohere-a/rerank-v3.5"]["search_units"] == 1
    assert rows["search", None]["saved_search_units"] == 3
    assert rows["search", None]["saved_cost_usd"] == 0.006  # $2.00 per 1,000 units
    text = await metrics_text(url)
    assert 'rerank_cache_saved_search_units_total{model="rerank-v3.5",team="search"} 3.0' in text
    assert 'rerank_cache_saved_usd_total{model="rerank-v3.5",team="search"} 0.006' in text
