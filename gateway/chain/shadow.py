"""Shadow scoring of tiered aliases: for a sample of the requests one tier served, score
the same query and documents by the other tier in the background, and compare the two
rankings (`policies.quality.shadow`), so the price of a downgrade is measured, not guessed.

A hook the pipeline calls after the answer, not a layer of the chain. A layer hands its
result to the layer outside it, so work it does after `inner.score` either delays the
answer or runs detached with no way to know the answer has gone out. Only the pipeline
knows that: for a sampled request it writes the response out first, then calls
`start`. `sample` (the decision) is synchronous and cheap, so unsampled requests are
answered exactly as before.

The shadow job enters the chain below the tier race (`gateway.chain.order.SHADOW_ENTRY`:
downgrade, cache with coalescing, budget, dispatch) with facts of its own:

- the reference model, so its scores fill the cache under the model that produced
  them, and a later request for that model hits them (counted as savings); requests of
  teams with an isolated cache are shadowed with `no-store` (their entries are theirs);
- the gateway-owned account `_shadow/<alias>`, whose quota is the shadow's daily cost
  cap (`max_usd_per_day`) and rate limit (`max_per_minute`), enforced and billed by the
  same reservation as any team's, so the cap is exact and holds across replicas when
  the limits live in Redis; `/admin/usage` lists the account apart from the teams.

A shadow failure never reaches the caller, who has long had their answer: it is counted
in `rerank_shadow_calls_total{outcome="failed"}`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.chain.fallback import degraded
from gateway.chain.job import Facts, ScoreJob, Scorer
from gateway.config import Config, ShadowConfig
from gateway.errors import ApiError
from gateway.observe.logs import log
from gateway.observe.metrics import Metrics
from policies.money.budget import BudgetConfig
from policies.money.pricing import MICROS_PER_USD, PriceTable
from policies.money.quota import TeamQuota
from policies.money.ratelimit import RateLimitConfig
from policies.money.usage import day_of
from policies.quality.shadow import FAST_VS_PRO, PRO_VS_FAST, GuardSettings, ShadowBook, compare

ACCOUNT_PREFIX = "_shadow/"
SCORED, SKIPPED_CAP, SKIPPED_RATE, FAILED = "scored", "skipped_cap", "skipped_rate", "failed"
OUTCOMES = (SCORED, SKIPPED_CAP, SKIPPED_RATE, FAILED)


def account(alias: str) -> str:
    """The gateway-owned account an alias's shadow scoring is billed to."""
    return ACCOUNT_PREFIX + alias


@dataclass(frozen=True, slots=True)
class ShadowSample:
    """A served request chosen for shadow scoring: what it asked and what it got."""

    alias: str
    team: str
    served_tier: str
    reference_model: str
    request_id: str
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None
    served_scores: Sequence[float]
    top_n: int | None


def shadow_quotas(config: Config) -> dict[str, TeamQuota]:
    """The quota of each shadowed alias's account: its daily cost cap and rate limit."""
    quotas = {}
    for alias, settings in _shadowed(config).items():
        quota = TeamQuota.of(
            account(alias),
            RateLimitConfig(requests_per_minute=settings.max_per_minute),
            BudgetConfig(usd_per_day=settings.max_usd_per_day),
        )
        assert quota is not None
        quotas[quota.team] = quota
    return quotas


def book_for(config: Config) -> ShadowBook:
    """The rolling agreement of every shadowed alias, with the guards that have min_ndcg."""
    shadows = _shadowed(config)
    guards = {
        alias: GuardSettings(s.min_ndcg, s.min_samples)
        for alias, s in shadows.items()
        if s.min_ndcg is not None
    }
    return ShadowBook({alias: s.window for alias, s in shadows.items()}, guards)


class ShadowRunner:
    def __init__(
        self,
        config: Config,
        inner: Scorer,
        prices: PriceTable,
        metrics: Metrics,
        book: ShadowBook,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`inner`: the chain below the tier race (`SHADOW_ENTRY`); its accounts' quotas
        (`shadow_quotas`) are the team accounts' too."""
        self.inner = inner
        self.prices = prices
        self.clock = clock
        self.metrics = metrics
        self.book = book
        self.rng = rng or random.Random()
        self.settings: dict[str, ShadowConfig] = _shadowed(config)
        self.tiers = {alias: dict(config.models[alias].tiers or {}) for alias in self.settings}
        self.team_rates = {
            name: team.shadow_sample_rate
            for name, team in config.teams.items()
            if team.shadow_sample_rate is not None
        }
        self.isolated = frozenset(n for n, t in config.teams.items() if t.cache == "isolated")
        self.timeout_s = {
            name: model.timeout_s or config.server.request_timeout_s
            for name, model in config.models.items()
        }
        self.calls = {alias: dict.fromkeys(OUTCOMES, 0) for alias in self.settings}
        self.spent_micros: dict[str, dict[str, int]] = {alias: {} for alias in self.settings}
        self._tasks: set[asyncio.Task[None]] = set()

    def sample(
        self, job: ScoreJob, scores: Sequence[float], top_n: int | None
    ) -> ShadowSample | None:
        """The sample to shadow for this answered job, or None (most requests)."""
        facts, report = job.facts, job.report
        settings = self.settings.get(facts.alias) if facts.alias else None
        if settings is None or facts.alias is None:
            return None
        if degraded(report):
            return None  # a degraded answer says nothing about the tier
        served_model = report.model or facts.model
        tiers = self.tiers[facts.alias]
        served = next((tier for tier, model in tiers.items() if model == served_model), None)
        if served is None:
            return None
        rate = self.team_rates.get(facts.team, settings.sample_rate)
        if rate <= 0 or self.rng.random() >= rate:
            return None
        return ShadowSample(
            alias=facts.alias,
            team=facts.team,
            served_tier=served,
            reference_model=tiers["fast" if served == "pro" else "pro"],
            request_id=facts.request_id,
            query=job.query,
            documents=job.documents,
            max_tokens_per_doc=job.max_tokens_per_doc,
            served_scores=list(scores),
            top_n=top_n,
        )

    def start(self, sample: ShadowSample) -> None:
        """Score `sample` by the other tier in the background (the answer is already out)."""
        task = asyncio.get_running_loop().create_task(self._run(sample))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the shadow scorings still running (at shutdown or after a reload)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, sample: ShadowSample) -> None:
        facts = Facts(
            request_id=f"{sample.request_id}-shadow",
            team=account(sample.alias),
            model=sample.reference_model,
            deadline=time.monotonic() + self.timeout_s[sample.reference_model],
            cache_control=frozenset({"no-store"}) if sample.team in self.isolated else frozenset(),
        )
        job = ScoreJob(facts, sample.query, sample.documents, sample.max_tokens_per_doc)
        try:
            scored = await self.inner.score(job)
        except ApiError as exc:
            # The shadow account's own quota: 402 is its daily cap, 429 its rate limit.
            outcome = {402: SKIPPED_CAP, 429: SKIPPED_RATE}.get(exc.status, FAILED)
            self._count(sample.alias, outcome)
            return
        except Exception as exc:  # never the caller's problem: counted and logged
            log.warning("shadow_failed", alias=sample.alias, error=exc.__class__.__name__)
            self._count(sample.alias, FAILED)
            return
        # Priced in the unit the reference deployment bills (search units, tokens, flat).
        cost = self.prices.charge(facts.model, job.report.deployment, scored.usage)
        day = day_of(self.clock())
        spent = self.spent_micros[sample.alias]
        spent[day] = spent.get(day, 0) + cost
        self.metrics.shadow_cost_usd.labels(sample.alias).inc(cost / MICROS_PER_USD)
        self._count(sample.alias, SCORED)
        self._compare(sample, scored.scores)

    def _compare(self, sample: ShadowSample, reference: Sequence[float]) -> None:
        served = compare(sample.served_scores, reference, sample.top_n)
        if sample.served_tier == "fast":
            direction, fast = FAST_VS_PRO, served
        else:
            direction, fast = PRO_VS_FAST, compare(reference, sample.served_scores, sample.top_n)
        labels = (sample.alias, sample.team, direction)
        self.metrics.shadow_ndcg.labels(*labels).observe(served.ndcg)
        self.metrics.shadow_overlap.labels(*labels).observe(served.overlap)
        self.metrics.shadow_rank_correlation.labels(*labels).observe(served.rank_correlation)
        changed = self.book.record(sample.alias, sample.team, direction, served, fast)
        if changed is not None:
            self.metrics.shadow_guard.labels(sample.alias, sample.team).set(int(changed))
            log.warning(
                "shadow_guard",
                alias=sample.alias,
                team=sample.team,
                downgrades="stopped" if changed else "allowed",
            )

    def _count(self, alias: str, outcome: str) -> None:
        self.calls[alias][outcome] += 1
        self.metrics.shadow_calls.labels(alias, outcome).inc()

    def report(self) -> dict[str, object]:
        """`GET /admin/tiers`: per shadowed alias, its settings, calls, spend, agreement."""
        today = day_of(self.clock())
        agreement = self.book.report(self.settings)
        aliases: dict[str, object] = {}
        for alias, s in self.settings.items():
            spent = self.spent_micros[alias]
            aliases[alias] = {
                "tiers": self.tiers[alias],
                "shadow": {
                    "sample_rate": s.sample_rate,
                    "max_usd_per_day": s.max_usd_per_day,
                    "max_per_minute": s.max_per_minute,
                    "min_ndcg": s.min_ndcg,
                    "min_samples": s.min_samples,
                    "account": account(alias),
                },
                "shadow_calls": self.calls[alias],
                "shadow_spend_usd": {
                    "today": spent.get(today, 0) / MICROS_PER_USD,
                    "total": sum(spent.values()) / MICROS_PER_USD,
                },
                **agreement[alias],
            }
        return {"scope": "this process", "aliases": aliases}


def _shadowed(config: Config) -> dict[str, ShadowConfig]:
    return {
        name: model.shadow
        for name, model in config.models.items()
        if model.tiers is not None and model.shadow is not None
    }
