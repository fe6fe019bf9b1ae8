"""Latency-budget model selection end to end: a tiered alias over a pro and a fast fake.

Latencies come from config priors and from what the gateway measures; the fakes' delays
are far apart (0 vs 0.4 s) so decisions do not depend on the machine's speed.
"""

from __future__ import annotations

import pytest

from tests.conftest import OTHER_TEAM_KEY
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.routing import AUTO, FAST, PRO, budget, metric, rerank_auto, serve_fakes, start
from tests.support.servers import ServerLoop

Fakes = tuple[dict[str, FakeCohere], dict[str, str]]


@pytest.fixture
def fakes(servers: ServerLoop) -> Fakes:
    return serve_fakes(servers, "pro", "fast")


async def selections(url: str, tier: str, reason: str) -> float:
    return await metric(
        url, "rerank_tier_selections_total", alias="rerank-auto", tier=tier, reason=reason
    )


async def test_tight_budget_selects_fast_and_loose_selects_pro(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    url = start(servers, rerank_auto(urls, pro_ms=300, fast_ms=50))

    status, headers, body = await post(url, AUTO, headers=budget(200))
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert headers["X-Rerank-Deployment"] == f"fast/{FAST}"
    assert "warnings" not in body["meta"]
    assert upstreams["fast"].calls[0]["model"] == FAST

    status, headers, _ = await post(url, AUTO, headers=budget(2000))
    assert status == 200 and headers["X-Rerank-Model"] == PRO
    assert (len(upstreams["pro"].calls), len(upstreams["fast"].calls)) == (1, 1)

    status, headers, _ = await post(url, AUTO)
    assert headers["X-Rerank-Model"] == PRO
    assert await selections(url, "fast", "fits") == 1
    assert await selections(url, "pro", "fits") == 1
    assert await selections(url, "pro", "no_budget") == 1


async def test_team_and_alias_budgets_apply_without_the_header(
    servers: ServerLoop, fakes: Fakes
) -> None:
    _, urls = fakes
    data = rerank_auto(
        urls,
        pro_ms=300,
        fast_ms=50,
        alias={"latency_budget_ms": 5000},
        teams={"search": {"latency_budget_ms": 200}},
    )
    url = start(servers, data)
    _, headers, _ = await post(url, AUTO)  # team "search": 200 ms
    assert headers["X-Rerank-Model"] == FAST
    _, headers, _ = await post(url, AUTO, headers={"Authorization": f"Bearer {OTHER_TEAM_KEY}"})
    assert headers["X-Rerank-Model"] == PRO  # team "ads" has none: the alias's 5000 ms
    _, headers, _ = await post(url, AUTO, headers=budget(5000))  # the header beats the team's
    assert headers["X-Rerank-Model"] == PRO


async def test_when_no_tier_fits_the_fastest_serves_with_a_warning(
    servers: ServerLoop, fakes: Fakes
) -> None:
    _, urls = fakes
    # The alias's default budget is soft (not a deadline), so the call may take longer.
    url = start(servers, rerank_auto(urls, pro_ms=300, fast_ms=100, alias={"latency_budget_ms": 20}))
    status, headers, body = await post(url, AUTO)
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    (warning,) = body["meta"]["warnings"]
    assert "no tier of 'rerank-auto'" in warning and "20 ms" in warning and FAST in warning
    assert await selections(url, "fast", "none_fit_fastest") == 1


async def test_latency_model_adapts_when_a_deployment_slows_down(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    data = rerank_auto(
        urls, pro_ms=300, fast_ms=10, alias={"latency_budget_ms": 250}, latency={"min_samples": 2}
    )
    url = start(servers, data)
    served = []

    async def ask() -> None:
        status, headers, body = await post(url, AUTO)
        assert status == 200
        served.append((headers["X-Rerank-Model"], "warnings" in body["meta"]))

    await ask()
    await ask()  # fast fits (prior 10 ms, then measured)
    upstreams["fast"].faults = Faults(delay_s=0.4)
    await ask()  # still predicted fast: one slow call among three moves its p90 to ~400 ms
    await ask()  # now neither fits; pro's prior (300 ms) is the faster
    await ask()  # one fast sample of pro, blended with its prior, already fits
    await ask()  # pro measured fast: fits
    assert served == [
        (FAST, False),
        (FAST, False),
        (FAST, False),
        (PRO, True),
        (PRO, False),
        (PRO, False),
    ]
    assert await selections(url, "pro", "fits") == 2
    assert await selections(url, "pro", "none_fit_fastest") == 1


@pytest.mark.parametrize("cache", ["none", "memory"])
async def test_fast_starts_when_pro_runs_late_and_answers_within_the_budget(
    servers: ServerLoop, fakes: Fakes, cache: str
) -> None:
    upstreams, urls = fakes
    upstreams["pro"].faults = Faults(hang=True)
    # pro is predicted to fit (100 ms); fast (200 ms, a prior: uncertain, so 1.5 times
    # that) must start by 1000 - 5 - 300 ms.
    data = rerank_auto(urls, pro_ms=100, fast_ms=200)
    data["cache"] = {"backend": cache}
    url = start(servers, data)
    status, headers, _ = await post(url, AUTO, headers=budget(1000))
    assert status == 200
    assert headers["X-Rerank-Model"] == FAST and headers["X-Rerank-Deployment"] == f"fast/{FAST}"
    assert (len(upstreams["pro"].calls), len(upstreams["fast"].calls)) == (1, 1)
    started_after = upstreams["fast"].arrivals[0] - upstreams["pro"].arrivals[0]
    assert started_after >= 0.6  # not before the switch point (695 ms after pro)
    assert await metric(url, "rerank_hedges_total", model="rerank-auto", outcome="won") == 1


async def test_fast_takes_over_at_once_when_pro_fails(servers: ServerLoop, fakes: Fakes) -> None:
    upstreams, urls = fakes
    upstreams["pro"].faults = Faults(status=503)
    url = start(servers, rerank_auto(urls, pro_ms=100, fast_ms=200))
    status, headers, _ = await post(url, AUTO, headers=budget(30000))
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert len(upstreams["pro"].calls) == 3  # pro's own retries first


async def test_pro_answering_in_time_cancels_nothing_and_calls_fast_never(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    url = start(servers, rerank_auto(urls, pro_ms=100, fast_ms=200))
    status, headers, _ = await post(url, AUTO, headers=budget(1000))
    assert status == 200 and headers["X-Rerank-Model"] == PRO
    assert len(upstreams["fast"].calls) == 0
    assert await metric(url, "rerank_hedges_total", model="rerank-auto", outcome="lost") == 0


async def test_invalid_budget_on_an_alias_is_400(servers: ServerLoop, fakes: Fakes) -> None:
    upstreams, urls = fakes
    url = start(servers, rerank_auto(urls, pro_ms=100, fast_ms=200))
    status, _, body = await post(url, AUTO, headers={"X-Latency-Budget-Ms": "fast please"})
    assert status == 400 and "X-Latency-Budget-Ms" in body["message"]
    assert not upstreams["pro"].calls and not upstreams["fast"].calls
