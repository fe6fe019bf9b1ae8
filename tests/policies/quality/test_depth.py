"""Depth advice as a plain policy (policies/quality/depth.py): the statistics, the advice and its
price, the enforcement decision, and the stores (memory; Redis with a scratch prefix)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from policies.money.billing import BillingRules
from policies.money.pricing import FREE, REQUEST, SEARCH_UNITS, TOKENS, Price
from policies.money.redis_quota import StoreUnavailable
from policies.quality.depth import (
    ADVICE,
    INSUFFICIENT,
    LADDER,
    MEASURE,
    NO_SIGNAL,
    Costing,
    DepthSettings,
    Enforcer,
    Rule,
    Tally,
    TeamDepth,
    Window,
    advise,
    chi2_sf,
    complete,
    drifted,
    wilson,
    z_score,
)
from policies.quality.depth_store import MemoryDepthStore
from policies.quality.redis_depth import RedisDepthStore
from tests.conftest import REDIS_URL, scratch_prefix
from tests.support.depth_traces import tally_of

SETTINGS = DepthSettings()
RULE = Rule.of(SETTINGS, None)
HOUR = 3600.0
COHERE = Costing(Price(SEARCH_UNITS, 2.0), BillingRules())


def window(*tallies: Tally, span_s: float = HOUR) -> Window:
    counts: Counter[str] = Counter()
    for tally in tallies:
        counts.update(tally.take())
    return Window.of(counts, span_s)


# ------------------------------------------------------------------ the traces


def test_a_team_whose_relevant_documents_sit_in_its_first_20_of_100_needs_20() -> None:
    w = window(tally_of(random.Random(1), 60, 100, 20))
    advice = advise(w, RULE, SETTINGS, COHERE)
    assert advice.status == ADVICE and advice.needs == 20 and advice.cuts
    assert advice.at_needs is not None
    assert advice.at_needs.recall == 1.0 and advice.at_needs.low >= 0.99
    # At 10 the team would lose about half its top 10: no confidence there.
    assert advice.curve[0].depth == 10 and advice.curve[0].recall < 0.7
    assert advice.sends_mean == 100 and advice.sends_p90 == 100
    # 100 documents are one search unit, and so are 20: the cut saves no money.
    assert advice.saving is not None
    assert advice.saving.per_request_now == advice.saving.per_request_advised == 1
    assert advice.saving.usd_per_day == 0.0
    assert "saves no search units" in advice.saving.note


def test_a_team_that_shuffles_has_no_order_signal() -> None:
    w = window(tally_of(random.Random(2), 200, 100, 100))
    advice = advise(w, RULE, SETTINGS, COHERE)
    assert advice.status == NO_SIGNAL and advice.needs is None
    assert advice.order_p_value is not None and advice.order_p_value >= SETTINGS.order_alpha
    assert "no order signal" in advice.message


def test_300_documents_with_everything_relevant_in_the_first_60_drop_from_3_units_to_1() -> None:
    w = window(tally_of(random.Random(3), 60, 300, 60), span_s=HOUR)
    advice = advise(w, RULE, SETTINGS, COHERE)
    assert advice.status == ADVICE and advice.needs == 75
    saving = advice.saving
    assert saving is not None and saving.unit == SEARCH_UNITS
    assert (saving.per_request_now, saving.per_request_advised) == (3, 1)
    assert "bills 3 search units today and would bill 1 at depth 75" in saving.note
    # 60 requests in an hour: 1,440 a day, each 2 units cheaper at $2 per 1,000 units.
    assert saving.requests_per_day == 1440
    assert saving.usd_per_day == pytest.approx(1440 * 2 * 2.0 / 1000)


# ------------------------------------------------------------------ prices


def test_chunked_documents_count_their_chunks() -> None:
    tally = tally_of(random.Random(4), 60, 100, 20)
    # Documents of ~3,000 characters (750 tokens) are two chunks each: 100 bill 2 units.
    long_texts = ["x" * 3000] * 100
    tally.sample(BillingRules(), "query", long_texts, None)
    advice = advise(window(tally), RULE, SETTINGS, COHERE)
    assert advice.saving is not None
    assert (advice.saving.per_request_now, advice.saving.per_request_advised) == (2, 1)
    assert "chunked" in advice.saving.note


def test_token_prices_scale_with_the_documents_cut() -> None:
    tally = tally_of(random.Random(5), 60, 100, 20)
    tally.sample(BillingRules(), "q" * 40, ["d" * 400] * 100, None)  # 100 + 10 tokens a pair
    costing = Costing(Price(TOKENS, 0.05), BillingRules())
    advice = advise(window(tally, span_s=HOUR), RULE, SETTINGS, costing)
    saving = advice.saving
    assert saving is not None and saving.unit == TOKENS
    assert saving.per_request_now == pytest.approx(100 * 110)
    assert saving.per_request_advised == pytest.approx(20 * 110)
    assert saving.usd_per_day == pytest.approx(1440 * 80 * 110 * 0.05 / 1e6)


@pytest.mark.parametrize(
    ("price", "said"),
    [(Price(FREE), "free"), (Price(REQUEST, 0.001), "billed per request")],
)
def test_free_and_per_request_prices_save_no_money(price: Price, said: str) -> None:
    advice = advise(
        window(tally_of(random.Random(6), 60, 100, 20)),
        RULE,
        SETTINGS,
        Costing(price, BillingRules()),
    )
    assert advice.saving is not None and advice.saving.usd_per_day == 0.0
    assert said in advice.saving.note


def test_latency_saved_is_the_mean_over_requests_that_would_be_cut() -> None:
    calls: list[tuple[int, int]] = []

    def saved(now: int, to: int, chars: float, query: float) -> float:
        calls.append((now, to))
        return 0.040  # 40 ms per cut call

    tally = tally_of(random.Random(7), 60, 100, 20)
    tally.add(10, None, False)  # a short list: within the depth, nothing saved
    costing = Costing(Price(SEARCH_UNITS, 2.0), BillingRules(), saved)
    advice = advise(window(tally), RULE, SETTINGS, costing)
    assert advice.saving is not None and set(calls) == {(100, 20)}
    assert advice.saving.latency_ms == pytest.approx(40 * 60 / 61)


# ------------------------------------------------------------------ statistics


def test_too_few_measured_requests_give_no_advice() -> None:
    advice = advise(window(tally_of(random.Random(8), 49, 100, 20)), RULE, SETTINGS, COHERE)
    assert advice.status == INSUFFICIENT and advice.needs is None
    assert "49 requests measured of the 50" in advice.message


def test_requests_asking_for_every_document_are_not_measured() -> None:
    tally = Tally()
    for _ in range(60):
        tally.add(8, None, False)  # top_n >= documents: nothing to learn about depth
    advice = advise(window(tally), RULE, SETTINGS, COHERE)
    assert advice.status == INSUFFICIENT and advice.requests == 60 and advice.measured == 0


def test_a_depth_is_advised_only_once_its_lower_bound_reaches_the_target() -> None:
    # 30 requests of top 10 all within 20: recall 1.0 on 300 documents, yet the lower
    # bound (0.987) is under 0.99; twice as many reach it.
    few = dict(min_requests=1)
    settings = DepthSettings(**few)
    advice = advise(window(tally_of(random.Random(9), 30, 100, 20)), RULE, settings, COHERE)
    assert advice.needs == 100 and not advice.cuts  # all it sends
    advice = advise(window(tally_of(random.Random(9), 60, 100, 20)), RULE, settings, COHERE)
    assert advice.needs == 20 and advice.cuts


def test_a_team_target_overrides_the_section() -> None:
    rule = Rule.of(SETTINGS, TeamDepth(target_recall=0.6, k=5))
    assert (rule.target, rule.k, rule.mode) == (0.6, 5, "advise")
    # The top 10 at random in the first 15: two thirds within 10, enough for 0.6.
    advice = advise(window(tally_of(random.Random(10), 60, 100, 15)), rule, SETTINGS, COHERE)
    assert advice.needs == 10
    assert advise(window(tally_of(random.Random(10), 60, 100, 15)), RULE, SETTINGS).needs == 20


def test_wilson_and_chi_square_match_known_values() -> None:
    low, high = wilson(0, 10, z_score(0.95))
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(380, 380, z_score(0.95))
    assert low == pytest.approx(0.99, abs=2e-4) and high == 1.0
    assert chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-4)
    assert chi2_sf(18.307, 10) == pytest.approx(0.05, abs=1e-4)
    assert chi2_sf(100.0, 3) < 1e-20 and chi2_sf(0.0, 4) == 1.0
    assert chi2_sf(2.0, 4) == pytest.approx(math.exp(-1) * 2, abs=1e-9)  # Q(2, 1) = 2/e


# ------------------------------------------------------------------ enforcement


def test_enforce_cuts_to_the_depth_but_never_below_top_n() -> None:
    enforcer = Enforcer("search", "rerank-v3.5", 20, explore_share=0.0)
    plan = enforcer.plan(100, None)
    assert (plan.cut, plan.measured, plan.explored, plan.header) == (20, False, False, "20/100")
    assert plan.warning is not None and "documents 20-99 follow" in plan.warning
    assert enforcer.plan(100, 30).cut == 30
    assert enforcer.plan(100, 5).cut == 20
    assert enforcer.plan(20, None) is MEASURE  # nothing beyond the depth
    assert enforcer.plan(40, 40) is MEASURE


def test_enforce_explores_its_share_at_full_depth() -> None:
    draws = iter([0.01, 0.5, 0.049, 0.05])
    enforcer = Enforcer("search", "m", 20, explore_share=0.05, rng=lambda: next(draws))
    plans = [enforcer.plan(100, None) for _ in range(4)]
    assert [p.explored for p in plans] == [True, False, True, False]
    assert [p.cut for p in plans] == [None, 20, None, 20]
    assert plans[0].header == "100/100; explore" and plans[0].measured
    # A request asking for more than the depth is explored too, but it stands for a cut
    # at its top_n, not at the depth: it is no sample of the depth's drift.
    wide = Enforcer("search", "m", 20, explore_share=1.0).plan(100, 30)
    assert wide.header == "100/100; explore" and wide.measured and not wide.explored


def test_results_beyond_the_depth_follow_in_the_callers_order() -> None:
    scores, order = complete([0.2, 0.9, 0.0], 6)
    assert order == [1, 0, 2, 3, 4, 5]
    assert scores == [0.2, 0.9, 0.0, 0.0, 0.0, 0.0]
    # A model with negative scores: the rest sit at its lowest, still after it.
    scores, order = complete([-1.5, 2.0], 4)
    assert scores[2:] == [-1.5, -1.5] and order == [1, 0, 2, 3]
    assert complete([0.3, 0.1], 2) == ([0.3, 0.1], [0, 1])


def test_drift_is_the_explored_recall_at_the_depth_below_the_target() -> None:
    z = z_score(0.95)
    fine = window(tally_of(random.Random(11), 20, 100, 20, explored=True))
    assert drifted(fine, 20, RULE, z, 10) is None
    moved = window(tally_of(random.Random(12), 20, 100, 60, explored=True))
    recall = drifted(moved, 20, RULE, z, 10)
    assert recall is not None and recall < 0.5
    assert drifted(moved, 20, RULE, z, 21) is None  # too few explored requests yet
    assert drifted(moved, 75, RULE, z, 10) is None  # all within 60 < 75


def test_tally_folds_positions_into_the_ladder_buckets() -> None:
    tally = Tally()
    tally.add(100, [0, 9, 10, 99], explored=True)
    tally.add(300, None, explored=False)
    counts = tally.take()
    assert counts["r"] == 2 and counts["m"] == 1
    assert counts["n:100"] == counts["n:300"] == 1 and counts["k:100"] == 4
    assert (counts["p:0"], counts["p:1"], counts["p:5"]) == (2, 1, 1)  # [0,10) [10,20) [75,100)
    assert counts["xr"] == 1 and counts["xk"] == 4 and counts["xp:0"] == 2
    assert LADDER[5] == 100 and tally.take() == Counter()


# ------------------------------------------------------------------ stores


async def test_the_memory_store_keeps_a_sliding_window_and_a_timed_revert() -> None:
    now = [1000.0]
    store = MemoryDepthStore(window_buckets=3, clock=lambda: now[0])
    for bucket in (10, 11, 12):
        await store.add("search", "m", bucket, {"r": 1, "n:100": 1}, now=100.0 * bucket)
    counts, first = await store.read("search", "m", [10, 11, 12])
    assert counts == Counter({"r": 3, "n:100": 3}) and first == 1000.0
    await store.add("search", "m", 13, {"r": 5}, now=1300.0)  # bucket 10 slides out
    counts, first = await store.read("search", "m", [11, 12, 13])
    assert counts["r"] == 7 and first == 1100.0
    assert await store.models("search") == {"m"} and await store.models("ads") == set()
    assert await store.revert("search", "m", ttl_s=60) is True
    assert await store.revert("search", "m", ttl_s=60) is False
    now[0] += 61
    assert await store.reverted("search", "m") is False


@pytest.fixture
def depth_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    yield from scratch_prefix(client, "rg-depth-")
    client.close()


async def test_the_redis_store_sums_every_replicas_counts(depth_prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        one = RedisDepthStore(client, depth_prefix, window_s=HOUR)
        two = RedisDepthStore(client, depth_prefix, window_s=HOUR)
        await one.add("search", "rerank-v3.5", 7, {"r": 2, "p:0": 5, "n:100": 0}, now=1000.0)
        await two.add("search", "rerank-v3.5", 7, {"r": 3, "p:0": 1}, now=1010.0)
        await two.add("search", "rerank-v3.5", 8, {"r": 1}, now=1100.0)
        counts, first = await one.read("search", "rerank-v3.5", [6, 7, 8])
        assert counts == Counter({"r": 6, "p:0": 6}) and first == 1000.0
        assert await two.models("search") == {"rerank-v3.5"}
        keys = {k.decode() for k in await client.keys(depth_prefix + "*")}
        # One hash tag per team: a Redis Cluster keeps them in one slot.
        assert keys == {
            f"{depth_prefix}{{search}}:depth:rerank-v3.5:7",
            f"{depth_prefix}{{search}}:depth:rerank-v3.5:8",
            f"{depth_prefix}{{search}}:depth:models",
        }
        assert 0 < await client.ttl(f"{depth_prefix}{{search}}:depth:rerank-v3.5:7") <= 3601
        assert await one.revert("search", "rerank-v3.5", 60) is True
        assert await two.revert("search", "rerank-v3.5", 60) is False
        assert await two.reverted("search", "rerank-v3.5") is True
    finally:
        await client.aclose()


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    import redis.asyncio as aioredis

    from tests.support.servers import free_port

    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    store = RedisDepthStore(client, "x:", window_s=HOUR)
    with pytest.raises(StoreUnavailable):
        await store.add("search", "m", 1, {"r": 1}, now=1.0)
    await client.aclose()
