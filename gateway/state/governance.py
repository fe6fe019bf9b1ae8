"""Cost governance wiring: over-fetch limits, prices, quota and usage stores, built once.

The decisions live in `policies` (limits, billing, pricing, ratelimit, budget, quota,
usage); this module builds them from config, picks the memory or Redis stores, and
translates outcomes into API errors, Prometheus counters and usage records. The
per-request parts are `apply_limits` (a pipeline step after parsing), the ledger
(`gateway.state.ledger`) that the budget layer of the scoring chain reserves and settles
with, and `record_savings`, which the cache layer calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.config import Config
from gateway.errors import ApiError, bad_request
from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics, child
from gateway.state.alerts import BudgetAlerts
from gateway.state.catalog import Catalog
from policies.limits import Enforced, LimitExceeded, LimitPolicy
from policies.pricing import FREE, MICROS_PER_USD, PriceTable, Usage
from policies.pricing import TOKENS as TOKEN_PRICED
from policies.quota import MemoryQuotaStore, QuotaStore, StoreUnavailable, TeamQuota
from policies.redis_quota import RedisQuotaStore
from policies.redis_usage import RedisUsageStore
from policies.usage import (
    COST,
    DOCUMENTS,
    REJECTED_LIMITS,
    REQUESTS,
    SAVED_COST,
    SAVED_TOKENS,
    SAVED_UNITS,
    SEARCH_UNITS,
    TOKENS,
    TRUNCATED,
    MemoryUsageStore,
    UsageStore,
    billed_counter,
    day_of,
)
from policies.usage_buffer import BufferedUsageStore

Clock = Callable[[], float]
UNPARSED_MODEL = "unknown"  # the model of a request refused before its body was read


class UsageRecorder:
    """Writes usage records and the matching Prometheus counters.

    A store failure never fails the request it describes: it is logged and counted.
    """

    def __init__(self, store: UsageStore, prices: PriceTable, metrics: Metrics, clock: Clock):
        self.store = store
        self.prices = prices
        self.metrics = metrics
        self.clock = clock
        self._warn = ThrottledWarning("usage_not_recorded")

    async def served(
        self, team: str, model: str, deployment: str, documents: int, usage: Usage, cost: int
    ) -> None:
        """One answered request that went upstream (called once, on settle)."""
        price = self.prices.price(model, deployment or None)
        child(self.metrics.search_units, team, model, deployment).inc(usage.search_units)
        child(self.metrics.cost_usd, team, model, deployment).inc(cost / MICROS_PER_USD)
        counts = {
            REQUESTS: 1,
            DOCUMENTS: documents,
            SEARCH_UNITS: usage.search_units,
            TOKENS: usage.tokens,
            COST: cost,
            billed_counter(price.kind): 1 if price.kind == FREE else price.billed(usage),
        }
        await self._add(team, model, deployment, counts)

    async def record_saved(self, team: str, model: str, saved: Usage) -> None:
        """Hook for the cache layer: usage that did not go upstream thanks to the cache.

        Valued at the model's dearest deployment price (the one a reservation uses).
        """
        if saved.search_units <= 0 and saved.tokens <= 0:
            return
        cost = self.prices.charge(model, None, saved)
        self.metrics.saved_search_units.labels(team, model).inc(saved.search_units)
        self.metrics.saved_usd.labels(team, model).inc(cost / MICROS_PER_USD)
        counts = {SAVED_UNITS: saved.search_units, SAVED_TOKENS: saved.tokens, SAVED_COST: cost}
        await self._add(team, model, "", counts)

    async def event(self, team: str, model: str, name: str) -> None:
        """Count a rejection, truncation or downgrade (no deployment involved)."""
        await self._add(team, model, "", {name: 1})

    async def _add(self, team: str, model: str, deployment: str, counts: dict[str, int]) -> None:
        try:
            await self.store.add(team, day_of(self.clock()), model, deployment, counts)
        except StoreUnavailable as exc:
            self.metrics.governance_store_errors.labels("usage", "record").inc()
            self._warn(team=team, model=model, error=str(exc)[:200])


class Governance:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        metrics: Metrics,
        redis: aioredis.Redis | RedisCluster | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.tiers = catalog.tiers
        self.rules = config.pricing.rules()
        self.limits = LimitPolicy(
            config.limits,
            {name: m.limits for name, m in config.models.items()},
            {name: t.limits for name, t in config.teams.items()},
            self.rules.tokens_per_char,
            config.server.max_body_bytes,
        )
        self.prices = PriceTable(config.pricing, catalog.deployments)
        self.quotas: dict[str, TeamQuota] = {}
        for name, team in config.teams.items():
            quota = TeamQuota.of(name, team.rate_limit, team.budget)
            if quota is not None:
                self.quotas[name] = quota
        self.fail_closed = {
            "rate_limit": config.limits.on_redis_error.rate_limit == "closed",
            "budget": config.limits.on_redis_error.budget == "closed",
        }
        self.quota_store, usage_store = _stores(config, redis)
        # Stands in for Redis while it is unreachable, for limits that fail open.
        self.local_quota = MemoryQuotaStore()
        self.warn_store_down = ThrottledWarning("limits_store_unreachable")
        self.warn_not_settled = ThrottledWarning("reservation_not_settled")
        self.usage = UsageRecorder(usage_store, self.prices, metrics, clock)
        self.shared = config.limits.limits_backend == "redis"
        self.report_teams = report_teams(config)
        self.alerts = BudgetAlerts(config, metrics, redis)  # thresholds and webhooks
        # (alias, team) -> True when the alias must not downgrade that team (shadow guard).
        self.stops_downgrade: Callable[[str, str], bool] = lambda alias, team: False

    def add_account(self, quota: TeamQuota) -> None:
        """A gateway-owned account (shadow scoring): its own limits, listed in reports."""
        self.quotas[quota.team] = quota
        if quota.team not in self.report_teams:
            self.report_teams.append(quota.team)

    def body_limit(self, team: str) -> int:
        return self.limits.body_limit(team)

    async def body_rejected(self, team: str) -> None:
        """A 413 for max_body_bytes: counted like every other enforcement, in the metric
        and in the usage report's rejected_limits (the model is not known: unparsed)."""
        self.metrics.overfetch.labels(team, "max_body_bytes", "reject").inc()
        await self.usage.event(team, UNPARSED_MODEL, REJECTED_LIMITS)

    async def apply_limits(
        self, team: str, model: str, query: str, texts: list[str]
    ) -> Enforced | None:
        """Over-fetch limits of (team, model): raise 400, or what to truncate (None: nothing)."""
        try:
            enforced = self.limits.enforce(team, model, query, texts)
        except LimitExceeded as exc:
            self.metrics.overfetch.labels(team, exc.limit, "reject").inc()
            await self.usage.event(team, model, REJECTED_LIMITS)
            raise bad_request(exc.message) from None
        if not enforced.applied:
            return None
        for applied in enforced.applied:
            self.metrics.overfetch.labels(team, applied.limit, applied.action).inc()
        await self.usage.event(team, model, TRUNCATED)
        return enforced

    async def record_savings(
        self,
        team: str,
        model: str,
        query: str,
        documents: Sequence[str],
        sent: Sequence[str],
        max_tokens_per_doc: int | None,
    ) -> None:
        """What the cache saved a request: the units of its documents that were not sent.

        The same estimate a reservation uses, so savings and spend add up."""
        rules = self.rules
        units = rules.estimate(query, documents, max_tokens_per_doc) - rules.estimate(
            query, sent, max_tokens_per_doc
        )
        tokens = rules.estimate_tokens(query, documents, max_tokens_per_doc) - (
            rules.estimate_tokens(query, sent, max_tokens_per_doc)
        )
        # Counted in metrics and usage reports, in units, tokens and dollars.
        await self.usage.record_saved(team, model, Usage(max(0, units), max(0, tokens)))

    def billed_units(self, model: str, deployment: str | None, usage: Usage) -> dict[str, int]:
        """`meta.billed_units` of an answer: what it cost, in the unit its price bills.

        Search-unit and flat prices: `search_units`; token prices: `input_tokens` (Cohere's
        field for token billing on its other endpoints). A free or fully cached answer
        bills `search_units: 0`."""
        price = self.prices.price(model, deployment)
        if not price.paid or usage.calls == 0:
            return {"search_units": 0}
        if price.kind == TOKEN_PRICED:
            return {"input_tokens": max(1, usage.tokens)}
        return {"search_units": max(1, usage.search_units)}

    def store_down(self, quota: TeamQuota) -> None:
        """The quota store failed: raise 503 if any of the team's limits fails closed."""
        self.metrics.governance_store_errors.labels("limits", "reserve").inc()
        closed = [kind.replace("_", " ") + "s" for kind in quota.kinds if self.fail_closed[kind]]
        if closed:
            raise ApiError(
                503,
                f"cannot check the {' and '.join(closed)} of team '{quota.team}' right now: the "
                "limits store (Redis) is unreachable and they are configured to fail closed "
                "(limits.on_redis_error); retry shortly",
                retry_after_s=STORE_RETRY_S,
            )
        self.warn_store_down(team=quota.team, effect="counting on this replica only")


STORE_RETRY_S = 5.0


ANONYMOUS = "anonymous"  # the team of every request when auth.mode is none


def report_teams(config: Config) -> list[str]:
    """Whose usage a report lists: the configured teams, or everyone when auth is off."""
    return sorted(config.teams) if config.auth.mode == "keys" else [ANONYMOUS]


def _stores(
    config: Config, redis: aioredis.Redis | RedisCluster | None
) -> tuple[QuotaStore, UsageStore]:
    if config.limits.limits_backend == "memory":
        return MemoryQuotaStore(), MemoryUsageStore(config.limits.usage_retention_days)
    if redis is None:  # config validation requires state.redis_url for this backend
        raise ValueError("limits.limits_backend is redis but no Redis client was given")
    prefix = config.limits.redis_prefix
    # Records that fail during an outage or a Sentinel failover are written later.
    usage = BufferedUsageStore(RedisUsageStore(redis, prefix, config.limits.usage_retention_days))
    return RedisQuotaStore(redis, prefix), usage
