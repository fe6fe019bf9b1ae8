"""Shadow quality evaluation through the HTTP API (issue 15, part 2).

A pro fake and a fast fake rank the same five documents differently by a known amount
(two neighbouring swaps, see tests/policies/quality/test_shadow.py for the hand computation), so the
reported NDCG@3 is 0.978967. Ordering is proven with events, never with timing: the
caller has its answer while the shadow call is still held at the pro fake.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.routing import (
    ADMIN,
    FAST,
    PRO,
    get,
    metric,
    rerank_auto,
    serve_fakes,
    start,
    wait_for,
)
from tests.support.servers import ServerLoop

ALIAS = "rerank-auto"
DOCS = ["alpha", "beta", "gamma", "delta", "epsilon"]
PRO_SCORES = dict(zip(DOCS, [0.9, 0.8, 0.7, 0.6, 0.5], strict=True))
FAST_SCORES = dict(zip(DOCS, [0.8, 0.9, 0.7, 0.5, 0.6], strict=True))
NDCG_AT_3 = 0.978967  # fast's top 3 against pro's, by hand in tests/policies/quality/test_shadow.py
# pro answers in 300 ms (its prior says 3 s), fast at once (prior 10 ms): a budget of
# 200 ms is served by fast. Shadow calls to pro teach its latency model too.
TIGHT = {"X-Latency-Budget-Ms": "200"}
PRO_USD_PER_CALL = 0.0025  # rerank-v4.0-pro: $2.50 per 1,000 search units, 1 unit a call
Fakes = tuple[dict[str, FakeCohere], dict[str, str]]


def body(query: str = "which letter", top_n: int | None = 3) -> dict[str, Any]:
    return {"model": ALIAS, "query": query, "documents": DOCS, "top_n": top_n}


def config(
    urls: dict[str, str], team: dict[str, Any] | None = None, **shadow: Any
) -> dict[str, Any]:
    alias = {"shadow": {"sample_rate": 1.0, "max_usd_per_day": 1.0, **shadow}}
    return rerank_auto(urls, 3000, 10, alias=alias, teams={"search": team or {}}, cache="memory")


@pytest.fixture
def fakes(servers: ServerLoop) -> Iterator[Fakes]:
    upstreams, urls = serve_fakes(servers, "pro", "fast")
    upstreams["pro"].score = lambda query, doc: PRO_SCORES[doc]
    upstreams["fast"].score = lambda query, doc: FAST_SCORES[doc]
    upstreams["pro"].faults = Faults(delay_s=0.3)
    yield upstreams, urls
    for fake in upstreams.values():  # free any call a test left held
        if fake.faults.hold is not None:
            fake.faults.hold.set()


async def tiers(url: str) -> dict[str, Any]:
    status, report = await get(url, "/admin/tiers", ADMIN)
    assert status == 200
    return report


async def shadow_outcomes(url: str) -> int:
    calls = (await tiers(url))["aliases"][ALIAS]["shadow_calls"]
    return sum(calls.values())


async def wait_for_shadows(url: str, count: int, timeout_s: float = 10.0) -> None:
    """Poll the report until `count` shadow scorings have ended (scored or not)."""
    give_up = time.monotonic() + timeout_s
    while (ended := await shadow_outcomes(url)) < count:
        assert time.monotonic() < give_up, f"only {ended} of {count} shadow scorings ended"
        await asyncio.sleep(0.005)


async def test_ndcg_matches_the_hand_computation_and_the_caller_does_not_wait(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    hold = threading.Event()
    upstreams["pro"].faults = Faults(hold=hold, delay_s=0.3)
    url = start(servers, config(urls))

    status, headers, answer = await post(url, body(), headers=TIGHT)
    # The answer is here while the shadow call to pro cannot have finished: it is held.
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert not hold.is_set()
    assert [r["index"] for r in answer["results"]] == [1, 0, 2]
    assert "warnings" not in answer["meta"]
    await wait_for(upstreams["pro"].faults.arrived.is_set)  # the shadow call, after
    assert await shadow_outcomes(url) == 0
    hold.set()
    await wait_for_shadows(url, 1)

    report = await tiers(url)
    status, spec = await get(url, "/admin/openapi.json", ADMIN)
    jsonschema.validate(report, spec["components"]["schemas"]["TiersReport"])
    entry = report["aliases"][ALIAS]
    assert entry["shadow_calls"] == {"scored": 1, "skipped_cap": 0, "skipped_rate": 0, "failed": 0}
    assert entry["shadow_spend_usd"] == {"today": PRO_USD_PER_CALL, "total": PRO_USD_PER_CALL}
    agreement = entry["teams"]["search"]["fast_vs_pro"]
    assert agreement["samples"] == 1 and agreement["k_mean"] == 3
    assert agreement["ndcg_mean"] == pytest.approx(NDCG_AT_3, abs=1e-4)
    assert agreement["overlap_mean"] == 1.0  # the same three, in another order
    assert agreement["rank_correlation_mean"] == pytest.approx(0.8)
    labels = {"alias": ALIAS, "team": "search", "direction": "fast_vs_pro"}
    assert await metric(url, "rerank_shadow_ndcg_count", **labels) == 1
    assert await metric(url, "rerank_shadow_ndcg_sum", **labels) == pytest.approx(NDCG_AT_3)
    assert await metric(url, "rerank_shadow_calls_total", alias=ALIAS, outcome="scored") == 1
    # The status page shows the same agreement.
    status, page = await get(url, "/admin/status.json", ADMIN)
    (row,) = [r for r in page["agreement"] if r["direction"] == "fast_vs_pro"]
    assert (row["alias"], row["team"], row["samples"]) == (ALIAS, "search", 1)
    assert row["ndcg_mean"] == pytest.approx(NDCG_AT_3, abs=1e-4)
    async with aiohttp.ClientSession() as session, session.get(
        url + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as resp:
        html = await resp.text()
    assert 'id="agreement"' in html and f"{NDCG_AT_3:.3f}" in html

    # Billed to the gateway's account, not the team's.
    status, usage = await get(url, "/admin/usage", ADMIN)
    assert status == 200
    billed = {(r["team"], r["model"]) for r in usage["rows"] if r["cost_usd"]}
    assert billed == {(f"_shadow/{ALIAS}", PRO), ("search", FAST)}
    assert usage["totals"][f"_shadow/{ALIAS}"]["cost_usd"] == PRO_USD_PER_CALL

    # The shadow's scores were cached under pro: a direct pro request is a hit, a saving.
    status, headers, direct = await post(url, {**body(), "model": PRO})
    assert status == 200 and headers["X-Cache"] == "hit"
    assert [r["index"] for r in direct["results"]] == [0, 1, 2]
    assert len(upstreams["pro"].calls) == 1
    assert await metric(url, "rerank_cache_saved_search_units_total", team="search", model=PRO) == 1


async def test_the_daily_shadow_cap_stops_shadow_calls_exactly(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    url = start(servers, config(urls, max_usd_per_day=3 * PRO_USD_PER_CALL))
    for i in range(5):  # distinct queries: nothing comes from the cache
        status, headers, _ = await post(url, body(f"query {i}"), headers=TIGHT)
        assert status == 200 and headers["X-Rerank-Model"] == FAST
        await wait_for_shadows(url, i + 1)
    entry = (await tiers(url))["aliases"][ALIAS]
    assert entry["shadow_calls"] == {"scored": 3, "skipped_cap": 2, "skipped_rate": 0, "failed": 0}
    assert len(upstreams["pro"].calls) == 3
    assert entry["shadow_spend_usd"]["today"] == pytest.approx(3 * PRO_USD_PER_CALL)
    assert await metric(url, "rerank_shadow_calls_total", alias=ALIAS, outcome="skipped_cap") == 2
    assert await metric(url, "rerank_shadow_cost_usd_total", alias=ALIAS) == pytest.approx(
        3 * PRO_USD_PER_CALL
    )


async def test_the_shadow_rate_limit_is_its_own(servers: ServerLoop, fakes: Fakes) -> None:
    upstreams, urls = fakes
    url = start(servers, config(urls, max_per_minute=1))
    for i in range(3):
        status, _, _ = await post(url, body(f"query {i}"), headers=TIGHT)
        assert status == 200  # the team is never limited by its shadow
        await wait_for_shadows(url, i + 1)
    calls = (await tiers(url))["aliases"][ALIAS]["shadow_calls"]
    assert (calls["scored"], calls["skipped_rate"]) == (1, 2)
    assert len(upstreams["pro"].calls) == 1


async def test_the_guard_stops_latency_downgrades_once_agreement_drops_below_min_ndcg(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    url = start(servers, config(urls, min_ndcg=0.99, min_samples=2))
    for i in range(2):  # two downgrades to fast, each agreeing 0.979 < 0.99
        _, headers, _ = await post(url, body(f"query {i}"), headers=TIGHT)
        assert headers["X-Rerank-Model"] == FAST
        await wait_for_shadows(url, i + 1)
    report = (await tiers(url))["aliases"][ALIAS]["teams"]["search"]
    assert report["downgrades"] == "stopped"
    assert report["fast_quality"]["ndcg_mean"] == pytest.approx(NDCG_AT_3, abs=1e-4)
    assert await metric(url, "rerank_shadow_guard_stopped", alias=ALIAS, team="search") == 1

    # pro, still predicted too slow for the budget, is kept; it answers at once now.
    upstreams["pro"].faults = Faults()
    status, headers, answer = await post(url, body("query 2"), headers=TIGHT)
    assert status == 200 and headers["X-Rerank-Model"] == PRO
    (warning,) = answer["meta"]["warnings"]
    assert "downgrades to the fast tier are stopped" in warning and "min_ndcg" in warning
    selected = await metric(
        url, "rerank_tier_selections_total", alias=ALIAS, tier="pro", reason="quality_guard"
    )
    assert selected == 1
    await wait_for_shadows(url, 3)
    # Another team is still downgraded; pro-served samples keep measuring fast.
    other = {**TIGHT, "Authorization": f"Bearer {OTHER_TEAM_KEY}"}
    upstreams["pro"].faults = Faults(delay_s=0.3)
    _, headers, _ = await post(url, body("query 3"), headers=other)
    assert headers["X-Rerank-Model"] == FAST
    await wait_for_shadows(url, 4)
    search = (await tiers(url))["aliases"][ALIAS]["teams"]["search"]
    assert search["pro_vs_fast"]["samples"] == 1
    assert search["fast_quality"]["samples"] == 3
    assert search["downgrades"] == "stopped"


async def test_the_guard_stops_budget_downgrades_too(servers: ServerLoop, fakes: Fakes) -> None:
    """Over its daily budget, team search is served by fast (on_exhausted: downgrade) until
    fast's agreement falls below min_ndcg: then the budget refusal stands."""
    _, urls = fakes
    team = {"budget": {"usd_per_day": 0.001, "on_exhausted": "downgrade"}}
    # With the cache on: the downgraded answer is cached under fast's keys, so the
    # shadow's pro call finds nothing of fast's under pro's.
    url = start(servers, config(urls, team, min_ndcg=0.99, min_samples=2))
    for i in range(2):
        status, headers, answer = await post(url, body(f"query {i}"))  # no latency budget
        assert status == 200 and headers["X-Rerank-Model"] == FAST
        assert "budget" in answer["meta"]["warnings"][0]
        await wait_for_shadows(url, i + 1)
    status, _, error = await post(url, body("query 2"))
    assert status == 402 and error["message"].startswith("budget exhausted: team 'search'")
    assert (
        f"; not downgraded to the fast tier of '{ALIAS}': its rankings for this team agree "
        "with pro's below shadow.min_ndcg (see GET /admin/tiers)"
    ) in error["message"]


async def test_a_team_rate_of_zero_and_direct_model_requests_are_never_shadowed(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    data = config(urls)
    data["teams"]["ads"]["shadow_sample_rate"] = 0
    url = start(servers, data)
    other = {**TIGHT, "Authorization": f"Bearer {OTHER_TEAM_KEY}"}
    status, headers, _ = await post(url, body("for ads"), headers=other)
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    status, _, _ = await post(url, {**body("direct"), "model": FAST})  # not via the alias
    assert status == 200
    status, _, _ = await post(url, body("for search"), headers=TIGHT)  # rate 1.0: shadowed
    await wait_for_shadows(url, 1)
    assert len(upstreams["pro"].calls) == 1
    assert upstreams["pro"].calls[0]["query"] == "for search"
    teams = (await tiers(url))["aliases"][ALIAS]["teams"]
    assert list(teams) == ["search"]


async def test_a_failing_reference_tier_never_reaches_the_caller(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    upstreams["pro"].faults = Faults(status=503)
    url = start(servers, config(urls))
    status, headers, answer = await post(url, body(), headers=TIGHT)
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert "warnings" not in answer["meta"]
    await wait_for_shadows(url, 1)
    entry = (await tiers(url))["aliases"][ALIAS]
    assert entry["shadow_calls"]["failed"] == 1 and entry["teams"] == {}
    assert entry["shadow_spend_usd"]["today"] == 0
