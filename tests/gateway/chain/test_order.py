"""The scoring chain as a whole: its declared order, frozen facts, and the layers that
serve another model (budget downgrade, tier race) together with the cache and coalescing.

The bug this guards against: a downgraded request used to rewrite the model after the
cache had keyed by it, so the fast tier's scores were stored under the pro model's keys
and served to other teams as pro scores for the whole TTL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.app import build_gateway
from gateway.chain.budget import BudgetLayer
from gateway.chain.cache import CacheLayer
from gateway.chain.dispatch import Dispatch
from gateway.chain.downgrade import DowngradeLayer
from gateway.chain.fallback import Fallback
from gateway.chain.job import Facts, Report, ScoreJob
from gateway.chain.order import LAYERS
from gateway.chain.tier_race import TierRace
from gateway.config import parse_config
from gateway.http.runtime import Gateway
from gateway.observe.metrics import Metrics
from gateway.state.accounts import Downgrade
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.cohere import FakeCohere, Faults, fake_score
from tests.support.calls import post
from tests.support.governance import tiered

PRO, FAST, ALIAS = "rerank-v4.0-pro", "rerank-v4.0-fast", "rerank-4"
QUERY = "capital cities"
SPEND = ["Paris is a capital", "bananas"]  # the request that uses up the budget
DOCS = [f"document {i}: Rome is a capital" for i in range(8)]


def tiered_config(upstream: str, cache: dict[str, Any]) -> dict[str, Any]:
    """Team `search` has a daily budget of one pro request, then downgrades; `ads` has none."""
    budget = {"usd_per_day": 0.0025, "on_exhausted": "downgrade"}
    return tiered(upstream, search={"budget": budget}, cache=cache)


def test_facts_cannot_be_edited_in_place() -> None:
    facts = Facts(request_id="r", team="t", model=PRO, deadline=time.monotonic() + 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.model = FAST  # type: ignore[misc]
    job = ScoreJob(facts, QUERY, DOCS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.facts = facts.serving(FAST)  # type: ignore[misc]
    # Serving another model makes new facts and a new job with a report of its own.
    rerun = job.rerun(facts.serving(FAST, over_budget="usd_per_day"))
    assert (rerun.facts.model, rerun.facts.over_budget, job.facts.model) == (
        FAST,
        "usd_per_day",
        PRO,
    )
    assert rerun.report is not job.report and job.subset(DOCS[:2]).report is not job.report


def test_report_adopts_what_a_rerun_did() -> None:
    outer = Report(warnings=["parsed"], attempts=1)
    run = Report(warnings=["downgraded"], deployment="d/fast", upstream_s=0.5, attempts=2)
    run.cache_status = "miss"
    outer.adopt(run, FAST)
    assert (outer.model, outer.deployment, outer.cache_status) == (FAST, "d/fast", "miss")
    assert (outer.warnings, outer.attempts, outer.upstream_s) == (
        ["parsed", "downgraded"],
        3,
        0.5,
    )


def test_the_chain_is_built_in_its_declared_order(fake_cohere: tuple[FakeCohere, str]) -> None:
    assert [layer.name for layer in LAYERS] == [
        "fallback",
        "tier_race",
        "downgrade",
        "cache",
        "budget",
    ]
    config = parse_config(tiered_config(fake_cohere[1], {"backend": "memory"}), {})
    scorer: Any = build_gateway(config, Metrics()).pipeline.scorer
    built = []
    while True:
        built.append(type(scorer))
        if isinstance(scorer, Dispatch):
            break
        scorer = scorer.inner
    assert built == [Fallback, TierRace, DowngradeLayer, CacheLayer, BudgetLayer, Dispatch]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_downgrade_never_stores_fast_scores_under_the_pro_model(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    cache_prefix: str,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    cache: dict[str, Any] = {"backend": backend}
    data = tiered_config(upstream, cache)
    if backend == "redis":
        cache["key_prefix"] = cache_prefix
        data["state"] = {"redis_url": "redis://127.0.0.1:6379/0"}
        data["limits"]["redis_prefix"] = cache_prefix  # budgets in Redis too, this test's own
    url = start_gateway(data)
    spend = {"model": ALIAS, "query": QUERY, "documents": SPEND}
    status, headers, _ = await post(url, spend, TEAM_KEY)
    assert (status, headers["X-Rerank-Model"]) == (200, PRO)

    body = {"model": ALIAS, "query": QUERY, "documents": DOCS}
    status, headers, answer = await post(url, body, TEAM_KEY)
    assert (status, headers["X-Rerank-Model"], headers["X-Cache"]) == (200, FAST, "miss")
    assert fake.calls[-1]["model"] == FAST
    assert "budget" in answer["meta"]["warnings"][0]

    # Another team asks for pro with the same documents: pro scores, from upstream.
    status, headers, _ = await post(url, {**body, "model": PRO}, OTHER_TEAM_KEY)
    assert (status, headers["X-Rerank-Model"], headers["X-Cache"]) == (200, PRO, "miss")
    assert [c["model"] for c in fake.calls] == [PRO, FAST, PRO]
    # ... and the fast scores the downgrade stored are there for whoever asks for fast.
    status, headers, _ = await post(url, {**body, "model": FAST}, OTHER_TEAM_KEY)
    assert (status, headers["X-Rerank-Model"], headers["X-Cache"]) == (200, FAST, "hit")
    assert len(fake.calls) == 3


@pytest.fixture
async def tiered_gateway(fake_cohere: tuple[FakeCohere, str]) -> AsyncIterator[Gateway]:
    """The tiered config with the memory cache, started in-process (the scorer is driven
    directly), closed after the test."""
    config = parse_config(tiered_config(fake_cohere[1], {"backend": "memory"}), {})
    gateway = build_gateway(config, Metrics())
    await gateway.start()
    yield gateway
    await gateway.close()


async def test_a_downgrade_is_a_signal_that_no_except_exception_takes_for_an_error(
    fake_cohere: tuple[FakeCohere, str], tiered_gateway: Gateway
) -> None:
    """Was an Exception: a bug guard (`except Exception`) between the team's account and
    the downgrade layer took it for a failure. It passes such a guard, and what it passes
    through cleans up: the cache's flight is released and its reservation refunded."""
    fake = fake_cohere[0]
    scorer: Any = tiered_gateway.pipeline.scorer
    while not isinstance(scorer, CacheLayer):  # the layers the signal crosses
        scorer = scorer.inner

    def job(docs: list[str]) -> ScoreJob:
        facts = Facts("r-search", "search", PRO, time.monotonic() + 10, alias=ALIAS)
        return ScoreJob(facts, QUERY, docs)

    await scorer.score(job(SPEND))  # the budget is used up
    caught: list[BaseException] = []
    try:
        await scorer.score(job(DOCS))
    except Exception as exc:  # what a guard against bugs writes
        caught.append(exc)
    except Downgrade as signal:
        assert signal.model == FAST
    assert caught == []
    assert scorer.flights._in_flight == {}  # nothing left for a follower to join
    assert [c["model"] for c in fake.calls] == [PRO]
    # The refunded reservation left the budget as it was: still over, still downgraded.
    with pytest.raises(Downgrade):
        await scorer.score(job(DOCS))


async def test_coalesced_followers_of_a_downgraded_request(
    fake_cohere: tuple[FakeCohere, str], tiered_gateway: Gateway
) -> None:
    """A downgraded request's flight is shared only by requests for the fast model, and
    every follower keeps its own report (model, warnings, cache status)."""
    fake = fake_cohere[0]
    scorer, metrics = tiered_gateway.pipeline.scorer, tiered_gateway.metrics

    def job(team: str, model: str, docs: list[str], alias: str | None = None) -> ScoreJob:
        facts = Facts("r-" + team, team, model, time.monotonic() + 10, alias=alias)
        return ScoreJob(facts, QUERY, docs)

    held = threading.Event()
    try:
        await scorer.score(job("search", PRO, SPEND, ALIAS))  # the budget is used up
        fake.faults = Faults(hold=held)
        downgraded = job("search", PRO, DOCS, ALIAS)
        leader = asyncio.create_task(scorer.score(downgraded))
        assert await asyncio.to_thread(fake.faults.arrived.wait, 5)  # fast call in flight
        follower = job("ads", FAST, DOCS)
        joined = asyncio.create_task(scorer.score(follower))
        for _ in range(10):  # no I/O before it joins: a few loop turns get it there
            await asyncio.sleep(0)
        pro = job("ads", PRO, DOCS)
        other = asyncio.create_task(scorer.score(pro))
        while len(fake.calls) < 3:  # the pro request's own call reached the upstream
            await asyncio.sleep(0.01)
        held.set()
        results = await asyncio.gather(leader, joined, other)
    finally:
        held.set()

    expected = [fake_score(QUERY, d) for d in DOCS]
    assert all(r.scores == expected for r in results)
    assert [c["model"] for c in fake.calls] == [PRO, FAST, PRO]
    assert (downgraded.report.model, downgraded.report.cache_status) == (FAST, "miss")
    assert "budget" in downgraded.report.warnings[0]
    # The follower joined the fast flight: its own report, no upstream of its own.
    assert (follower.report.model, follower.report.cache_status) == (None, "hit")
    assert follower.report.warnings == [] and follower.report.attempts == 0
    coalesced = metrics.registry.get_sample_value(
        "rerank_cache_documents_total", {"source": "coalesced"}
    )
    assert coalesced == len(DOCS)
    assert (pro.report.cache_status, pro.report.deployment) == ("miss", "cohere-a/" + PRO)


async def test_a_tier_race_loser_leaves_its_flight_to_the_request_that_joined_it(
    fake_cohere: tuple[FakeCohere, str], tiered_gateway: Gateway
) -> None:
    """Pro runs late, fast wins the race and pro's job is cancelled; another request that
    joined pro's flight still gets pro's scores from that one call, and both tiers' scores
    land in the cache under their own model."""
    from policies.routing.tier_choice import TierBackup

    fake = fake_cohere[0]
    scorer, metrics = tiered_gateway.pipeline.scorer, tiered_gateway.metrics

    def job(team: str, model: str, backup: TierBackup | None = None) -> ScoreJob:
        alias = ALIAS if backup else None
        facts = Facts("r-" + team, team, model, time.monotonic() + 10, alias=alias, backup=backup)
        return ScoreJob(facts, QUERY, DOCS)

    held = threading.Event()
    try:
        fake.faults = Faults(hold=held, times=1)  # pro's call hangs, fast's does not
        # Team ads has no budget: while both legs run, each holds a reservation of its own.
        raced = job("ads", PRO, TierBackup(ALIAS, FAST, after_s=0.05))
        race = asyncio.create_task(scorer.score(raced))
        assert await asyncio.to_thread(fake.faults.arrived.wait, 5)
        joined = job("search", PRO)
        follower = asyncio.create_task(scorer.score(joined))
        won = await race  # fast, started at the switch point, answers first
        assert not follower.done()  # still waiting on pro's flight, which was not cancelled
        held.set()
        scored = await follower
        again = job("ads", PRO)
        cached = await scorer.score(again)
    finally:
        held.set()

    expected = [fake_score(QUERY, d) for d in DOCS]
    assert won.scores == scored.scores == cached.scores == expected
    assert [c["model"] for c in fake.calls] == [PRO, FAST]
    assert (raced.report.model, raced.report.deployment) == (FAST, "cohere-a/" + FAST)
    assert (joined.report.model, joined.report.cache_status) == (None, "hit")
    assert again.report.cache_status == "hit"  # pro's scores were stored under pro
    hedges = metrics.registry.get_sample_value(
        "rerank_hedges_total", {"model": ALIAS, "outcome": "won"}
    )
    assert hedges == 1.0
