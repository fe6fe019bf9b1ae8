"""The cache layer and coalescing in-process, driven by a gated upstream scorer so every
interleaving is chosen by the test: merging, single flight, overlap, failure, cancellation,
deadlines; and a property test that any cached/fresh split ranks like scoring it all."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chain.cache import CacheLayer
from gateway.chain.job import Facts, Scored, ScoreJob
from gateway.errors import ApiError
from gateway.observe.metrics import Metrics
from gateway.state.score_cache import CacheSettings
from policies.cache import MemoryStore
from policies.money.billing import DEFAULT_RULES
from tests.fakes.cohere import fake_score

QUERY = "which documents talk about rockets"


class Upstream:
    """Scores per (query, document) like a cross-encoder; records each call's documents.

    With `gated`, each call waits until the test releases it; `failures` makes the next
    calls raise instead."""

    def __init__(self, gated: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.replays: list[list[str]] = []  # jobs answered from known scores, as dispatch does
        self.gated = gated
        self.gates: list[asyncio.Event] = []
        self.started = asyncio.Event()
        self.failures = 0

    async def score(self, job: ScoreJob) -> Scored:
        job.report.deployment = "fake/model"
        if job.replay is not None:
            self.replays.append(list(job.documents))
            return Scored(list(job.replay), DEFAULT_RULES.estimate(job.query, job.documents), 0, 1)
        self.calls.append(list(job.documents))
        if self.gated:
            gate = asyncio.Event()
            self.gates.append(gate)
            self.started.set()
            await gate.wait()
        if self.failures:
            self.failures -= 1
            raise ApiError(429, "this caller's team is over its budget")
        return Scored(
            [fake_score(job.query, d) for d in job.documents],
            DEFAULT_RULES.estimate(job.query, job.documents),
        )

    async def wait_calls(self, n: int) -> None:
        while len(self.calls) < n:
            await asyncio.sleep(0)


def make_layer(
    upstream: Upstream,
    store: MemoryStore | None = None,
    isolated: frozenset[str] = frozenset(),
    **private: object,
) -> CacheLayer:
    settings_ = CacheSettings(
        families={"m": "m"},
        ttl_s={"m": 60.0},
        isolated_teams=isolated,
        uncacheable=frozenset(),
        **private,  # type: ignore[arg-type]
    )
    store = store if store is not None else MemoryStore(max_entries=10_000)
    return CacheLayer(upstream, store, settings_, Metrics())


def job(docs: list[str], team: str = "t", deadline_s: float = 5.0, cc: str = "") -> ScoreJob:
    facts = Facts(
        request_id="r",
        team=team,
        model="m",
        deadline=time.monotonic() + deadline_s,
        cache_control=frozenset(cc.split()) if cc else frozenset(),
    )
    return ScoreJob(facts, QUERY, docs)


def docs(n: int, start: int = 0) -> list[str]:
    return [f"document {i} about {'rockets' if i % 3 else 'gardens'}" for i in range(start, n)]


def expected(documents: list[str]) -> list[float]:
    return [fake_score(QUERY, d) for d in documents]


async def test_hit_partial_miss_and_billing() -> None:
    upstream = Upstream()
    layer = make_layer(upstream)
    first = job(docs(50))
    scored = await layer.score(first)
    assert (scored.scores, scored.search_units, first.report.cache_status) == (
        expected(docs(50)),
        1,
        "miss",
    )
    again = job(docs(50))
    assert (await layer.score(again)).search_units == 0
    assert again.report.cache_status == "hit" and again.report.deployment is None
    mixed = docs(40) + docs(60, 50)
    partial = job(mixed)
    scored = await layer.score(partial)
    assert upstream.calls[-1] == docs(60, 50)
    assert (scored.scores, scored.search_units, partial.report.cache_status) == (
        expected(mixed),
        1,
        "partial",
    )
    assert len(upstream.calls) == 2


async def test_repeated_documents_in_one_request_are_sent_once() -> None:
    upstream = Upstream()
    layer = make_layer(upstream)
    scored = await layer.score(job(["a rocket", "a garden", "a rocket"]))
    assert upstream.calls == [["a rocket", "a garden"]]
    assert scored.scores == expected(["a rocket", "a garden", "a rocket"])


async def test_identical_concurrent_misses_share_one_call() -> None:
    upstream = Upstream(gated=True)
    layer = make_layer(upstream)
    jobs = [job(docs(20)) for _ in range(50)]
    tasks = [asyncio.create_task(layer.score(j)) for j in jobs]
    await upstream.started.wait()
    await asyncio.sleep(0)  # let every request reach its wait
    upstream.gates[0].set()
    results = await asyncio.gather(*tasks)
    assert len(upstream.calls) == 1
    assert all(r.scores == expected(docs(20)) for r in results)
    assert sorted(r.search_units for r in results) == [0] * 49 + [1]
    assert sorted(j.report.cache_status or "" for j in jobs) == ["hit"] * 49 + ["miss"]
    docs_metric = layer.metrics.registry.get_sample_value
    assert docs_metric("rerank_cache_documents_total", {"source": "coalesced"}) == 49 * 20


async def test_overlapping_request_sends_only_what_is_not_in_flight() -> None:
    upstream = Upstream(gated=True)
    layer = make_layer(upstream)
    first = asyncio.create_task(layer.score(job(docs(40))))
    await upstream.wait_calls(1)
    second_job = job(docs(50))
    second = asyncio.create_task(layer.score(second_job))
    await upstream.wait_calls(2)
    assert upstream.calls[1] == docs(50, 40)
    for gate in upstream.gates:
        gate.set()
    assert (await second).scores == expected(docs(50))
    assert (await first).scores == expected(docs(40))
    assert second_job.report.cache_status == "partial"


async def test_leader_failure_makes_followers_fetch_themselves() -> None:
    upstream = Upstream(gated=True)
    upstream.failures = 1  # the leader's call fails (its own error, e.g. its budget)
    layer = make_layer(upstream)
    leader = asyncio.create_task(layer.score(job(docs(10), team="broke")))
    await upstream.wait_calls(1)
    followers = [asyncio.create_task(layer.score(job(docs(10)))) for _ in range(3)]
    await asyncio.sleep(0)
    upstream.gates[0].set()
    await upstream.wait_calls(4)  # each follower retries alone: the error was not theirs
    for gate in upstream.gates:
        gate.set()
    try:
        await leader
        raise AssertionError("the leader should see its own error")
    except ApiError as exc:
        assert exc.status == 429
    for follower in followers:
        assert (await follower).scores == expected(docs(10))


async def test_cancelled_leader_does_not_cancel_the_shared_call() -> None:
    upstream = Upstream(gated=True)
    store = MemoryStore(max_entries=100)
    layer = make_layer(upstream, store)
    leader = asyncio.create_task(layer.score(job(docs(5))))
    await upstream.wait_calls(1)
    follower = asyncio.create_task(layer.score(job(docs(5))))
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    assert leader.cancelled()
    upstream.gates[0].set()
    assert (await follower).scores == expected(docs(5))
    assert len(upstream.calls) == 1
    assert len(store) == 5  # the call finished and filled the cache for everyone


async def test_follower_gives_up_at_its_own_deadline() -> None:
    upstream = Upstream(gated=True)
    layer = make_layer(upstream)
    leader = asyncio.create_task(layer.score(job(docs(5))))
    await upstream.wait_calls(1)
    try:
        await layer.score(job(docs(5), deadline_s=0.0))
        raise AssertionError("expected a 504")
    except ApiError as exc:
        assert exc.status == 504 and "deadline" in exc.message
    upstream.gates[0].set()
    assert (await leader).scores == expected(docs(5))


async def test_no_cache_sends_everything_and_still_stores() -> None:
    upstream = Upstream()
    store = MemoryStore(max_entries=100)
    layer = make_layer(upstream, store)
    await layer.score(job(docs(5)))
    fresh = job(docs(5), cc="no-cache")
    await layer.score(fresh)
    assert fresh.report.cache_status == "miss" and len(upstream.calls) == 2
    normal = job(docs(5))
    await layer.score(normal)
    assert normal.report.cache_status == "hit" and len(upstream.calls) == 2


async def test_no_store_bypasses_reads_writes_and_coalescing() -> None:
    upstream = Upstream()
    store = MemoryStore(max_entries=100)
    layer = make_layer(upstream, store)
    bypassed = job(docs(5), cc="no-store")
    assert (await layer.score(bypassed)).scores == expected(docs(5))
    assert bypassed.report.cache_status == "bypass" and len(store) == 0


async def test_isolated_team_does_not_share() -> None:
    upstream = Upstream()
    layer = make_layer(upstream, isolated=frozenset({"private"}))
    await layer.score(job(docs(5), team="a"))
    shared = job(docs(5), team="b")
    await layer.score(shared)
    assert shared.report.cache_status == "hit"
    private = job(docs(5), team="private")
    await layer.score(private)
    assert private.report.cache_status == "miss" and len(upstream.calls) == 2


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=40),
    cached_mask=st.lists(st.booleans(), min_size=40, max_size=40),
    top_n=st.integers(min_value=1, max_value=40),
)
def test_any_cached_fresh_split_ranks_like_scoring_everything(
    texts: list[str], cached_mask: list[bool], top_n: int
) -> None:
    async def run() -> None:
        upstream = Upstream()
        layer = make_layer(upstream)
        # Warm the cache with an arbitrary subset, then score the whole list.
        warm = [t for t, cached in zip(texts, cached_mask, strict=False) if cached]
        if warm:
            await layer.score(job(warm))
        calls_before = len(upstream.calls)
        scored = await layer.score(job(texts))
        full = expected(texts)
        assert scored.scores == full

        def ranking(scores: list[float]) -> list[int]:
            return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top_n]

        assert ranking(scored.scores) == ranking(full)
        fresh = set(texts) - set(warm)
        sent = upstream.calls[calls_before:]
        assert sorted(d for call in sent for d in call) == sorted(fresh)
        assert scored.search_units == DEFAULT_RULES.estimate(QUERY, sorted(fresh))

    asyncio.run(run())


async def test_flight_cancelled_before_it_runs_releases_its_followers() -> None:
    # At shutdown a flight's task can be cancelled before its first step; whoever waits
    # on its documents must not hang.
    upstream = Upstream()
    layer = make_layer(upstream)
    leader = asyncio.create_task(layer.score(job(docs(3))))
    await asyncio.sleep(0)  # the leader registered its flight; the flight has not run
    (flight,) = {f.task for f in layer.flights._in_flight.values()}
    flight.cancel()
    follower = asyncio.create_task(layer.score(job(docs(3))))  # joins the doomed flight
    assert (await asyncio.wait_for(follower, 2)).scores == expected(docs(3))
    await asyncio.gather(leader, return_exceptions=True)
    assert upstream.calls == [docs(3)]  # only the follower's own retry reached upstream


# -- teams that must not learn from other teams' entries (hide_cross_team_hits)


async def test_a_private_team_is_told_a_miss_for_what_another_team_scored() -> None:
    upstream = Upstream()
    layer = make_layer(upstream, private_teams=frozenset({"b"}))
    await layer.score(job(docs(5), team="a"))
    told = job(docs(5), team="b")
    scored = await layer.score(told)
    # Not sent again: the known scores go inward as a replay, billed as a call.
    assert (told.report.cache_status, upstream.calls, upstream.replays) == (
        "miss",
        [docs(5)],
        [docs(5)],
    )
    assert scored.scores == expected(docs(5))
    assert (scored.search_units, scored.calls, told.report.deployment) == (1, 1, "fake/model")
    again = job(docs(5), team="b")  # now its own traffic has seen them
    assert (await layer.score(again)).search_units == 0
    assert again.report.cache_status == "hit" and len(upstream.replays) == 1
    other = job(docs(5), team="c")  # a team without the setting sees the shared hit
    await layer.score(other)
    assert other.report.cache_status == "hit"


async def test_a_private_team_sends_everything_it_has_not_seen_when_some_is_new() -> None:
    # A call goes upstream anyway: the documents other teams scored go with it, so the
    # call, its bill and its timing are the ones the team would have had alone.
    upstream = Upstream()
    layer = make_layer(upstream, private_teams=frozenset({"b"}))
    await layer.score(job(docs(5), team="a"))
    mixed = job(docs(8), team="b")
    assert (await layer.score(mixed)).scores == expected(docs(8))
    assert mixed.report.cache_status == "miss" and upstream.calls[-1] == docs(8)
    partial = job(docs(10), team="b")
    await layer.score(partial)
    assert partial.report.cache_status == "partial" and upstream.calls[-1] == docs(10, 8)
    assert upstream.replays == []


async def test_a_private_team_joins_no_other_teams_flight() -> None:
    upstream = Upstream(gated=True)
    layer = make_layer(upstream, private_teams=frozenset({"b"}))
    first = asyncio.create_task(layer.score(job(docs(3), team="a")))
    await upstream.wait_calls(1)
    second_job = job(docs(3), team="b")
    second = asyncio.create_task(layer.score(second_job))
    await upstream.wait_calls(2)  # its own call, not a wait on team a's
    for gate in upstream.gates:
        gate.set()
    await asyncio.gather(first, second)
    assert second_job.report.cache_status == "miss"
    assert upstream.calls == [docs(3), docs(3)]


async def test_teams_the_config_does_not_name_follow_the_global_setting() -> None:
    upstream = Upstream()
    layer = make_layer(
        upstream,
        private_teams=frozenset({"hidden"}),
        private_default=True,
        known_teams=frozenset({"hidden", "open"}),
    )
    await layer.score(job(docs(4), team="writer"))
    told = {team: job(docs(4), team=team) for team in ("hidden", "open", "api-key-team")}
    for j in told.values():
        await layer.score(j)
    assert {t: j.report.cache_status for t, j in told.items()} == {
        "hidden": "miss",
        "open": "hit",  # named in the config without the setting
        "api-key-team": "miss",
    }
