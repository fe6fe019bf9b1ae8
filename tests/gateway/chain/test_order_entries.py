"""Where a job enters the chain (gateway.chain.order.Entries): below the fallback, the tier
race and the downgrade only when none of them could act on it. Built from real configs;
the answers are checked through the chain."""

from __future__ import annotations

import time
from typing import Any

from gateway.app import build_gateway
from gateway.chain.cache import CacheLayer
from gateway.chain.fallback import Fallback
from gateway.chain.job import Facts, ScoreJob
from gateway.chain.order import Entries
from gateway.config import parse_config
from gateway.observe.metrics import Metrics
from policies.routing.tier_choice import TierBackup
from tests.fakes.cohere import FakeCohere
from tests.support.governance import governed
from tests.support.servers import free_port

PRO, FAST, ALIAS = "rerank-v4.0-pro", "rerank-v4.0-fast", "rerank-4"
PLAIN, KEPT = "rerank-v3.5", "rerank-kept"


def config(upstream: str) -> dict[str, Any]:
    """`search` falls back to passthrough whatever the model; `ads` only where the model
    says so (KEPT); PRO/FAST are tiers of ALIAS."""
    data = governed({"cohere-a": upstream}, search={"fallback": "passthrough"})
    deployments = [{"provider": "cohere-a"}]
    data["models"][KEPT] = {"deployments": deployments, "fallback": "local"}
    for model in (PRO, FAST):
        data["models"][model] = {"deployments": [{"provider": "cohere-a", "model": model}]}
    data["models"][ALIAS] = {"tiers": {"pro": PRO, "fast": FAST}}
    return data


def facts(team: str, model: str, **more: Any) -> Facts:
    return Facts("r", team, model, time.monotonic() + 5, **more)


def test_jobs_enter_below_the_layers_that_cannot_act_on_them(
    fake_cohere: tuple[FakeCohere, str],
) -> None:
    gateway = build_gateway(parse_config(config(fake_cohere[1]), {}), Metrics())
    entries = gateway.pipeline.entries
    assert isinstance(entries, Entries)
    full = gateway.pipeline.scorer
    assert isinstance(full, Fallback) and isinstance(entries.direct, CacheLayer)
    assert entries.scorer(facts("ads", PLAIN)) is entries.direct  # nothing above can act
    assert entries.scorer(facts("ads", PRO)) is entries.direct  # a tier named as such
    assert entries.scorer(facts("ads", KEPT)) is full  # the model's fallback may answer
    assert entries.scorer(facts("search", PLAIN)) is full  # the team's fallback may
    assert entries.scorer(facts("ads", PRO, alias=ALIAS)) is full  # a downgrade may act
    backup = TierBackup(ALIAS, FAST, 0.05)
    assert entries.scorer(facts("ads", PRO, backup=backup)) is full  # a tier race may
    # Decided once per (team, model), and the same answer again.
    assert entries.scorer(facts("ads", PLAIN)) is entries.scorer(facts("ads", PLAIN))
    assert entries.scorer(facts("search", PLAIN)) is full


async def test_a_fallback_still_answers_for_the_pairs_that_have_one() -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: every attempt fails
    gateway = build_gateway(parse_config(config(down), {}), Metrics())
    entries = gateway.pipeline.entries
    assert entries is not None
    docs = ["a", "b", "c"]
    for team, model, mode in (("search", PLAIN, "passthrough"), ("ads", KEPT, "local")):
        job = ScoreJob(facts(team, model), "q", docs)
        scored = await entries.scorer(job.facts).score(job)
        assert len(scored.scores) == 3 and job.report.deployment == f"fallback/{mode}"
    await gateway.close()
