"""The limits-and-budget layer of the scoring chain, just outside the Router.

Per job (what is left after the cache): estimate the search units of the documents
that will go upstream, reserve them and their cost against the team's rate limits and
budgets in one atomic step, call the Router, then settle the reservation to the real
units and the price of the deployment that served (`ctx.deployment`); refund it when
the Router fails. One reservation per request, however many deployments the Router
tries, so failover is never rate limited. Usage is recorded here, once, on settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.chain.job import RequestContext, Scored, ScoreJob, Scorer
from gateway.errors import ApiError, bad_request
from gateway.observe import tracing
from gateway.observe.events import TIER_DOWNGRADE
from gateway.state.governance import Governance
from policies.budget import usd
from policies.quota import (
    BUDGET,
    QuotaRequest,
    QuotaStore,
    Refusal,
    StoreUnavailable,
    TeamQuota,
)
from policies.ratelimit import REQUESTS
from policies.usage import DOWNGRADED, REJECTED_BUDGET, REJECTED_RATE


class Governor:
    def __init__(self, inner: Scorer, governance: Governance) -> None:
        self.inner = inner
        self.gov = governance
        self.tiers: Mapping[str, Mapping[str, str]] = governance.tiers

    async def score(self, job: ScoreJob) -> Scored:
        ctx = job.ctx
        quota = self.gov.quotas.get(ctx.team)
        admitted = await self._admit(quota, job) if quota is not None else None
        try:
            scored = await self.inner.score(job)
        except BaseException:
            if admitted is not None:
                reserved, store = admitted
                refund = self._adjust(store, reserved, -reserved.units, -reserved.cost_micros)
                await asyncio.shield(refund)
            raise
        deployment = ctx.deployment or ""
        cost = self.gov.prices.cost_micros(ctx.model, ctx.deployment, scored.search_units)
        if admitted is not None:
            reserved, store = admitted
            await self._adjust(
                store, reserved, scored.search_units - reserved.units, cost - reserved.cost_micros
            )
            self.gov.alerts.settled(store, reserved)  # thresholds, checked in the background
        await self.gov.usage.served(
            ctx.team, ctx.model, deployment, len(job.documents), scored.search_units, cost
        )
        return scored

    async def _admit(
        self, quota: TeamQuota, job: ScoreJob
    ) -> tuple[QuotaRequest, QuotaStore] | None:
        """Reserve or raise 429/400; the reservation and the store that holds it.

        When the shared store is down and the team's limits fail open, this replica's
        own counters stand in (each replica then enforces the limits on its own)."""
        ctx = job.ctx
        units = self.gov.rules.estimate(job.query, job.documents, job.max_tokens_per_doc)
        if quota.unit_rate is not None and not quota.unit_rate.fits_ever(units):
            self.gov.metrics.ratelimit_rejections.labels(ctx.team, quota.unit_rate.name).inc()
            await self.gov.usage.event(ctx.team, ctx.model, REJECTED_RATE)
            raise bad_request(
                f"this request needs about {units} search units, more than team '{ctx.team}' may "
                f"use in a minute (rate_limit.search_units_per_minute="
                f"{quota.unit_rate.per_minute}); send fewer or shorter documents"
            )
        now = self.gov.clock()
        cost = self.gov.prices.cost_micros(ctx.model, None, units)
        request = quota.request(units, cost, now)
        store = self.gov.quota_store
        try:
            request, refusal = await self._reserve(store, quota, ctx, request)
        except StoreUnavailable:
            self.gov.store_down(quota)  # raises 503 when the limits fail closed
            store = self.gov.local_quota
            request, refusal = await self._reserve(store, quota, ctx, request)
        tracing.event(
            "budget.reserve",
            units=request.units,
            outcome=refusal.limit if refusal is not None else "admitted",
            shared=store is self.gov.quota_store,
        )
        if refusal is not None:
            await self._refuse(ctx, request, refusal)
        return request, store

    async def _reserve(
        self, store: QuotaStore, quota: TeamQuota, ctx: RequestContext, request: QuotaRequest
    ) -> tuple[QuotaRequest, Refusal | None]:
        """Reserve `request` in `store`; over budget, a tiered alias may downgrade."""
        refusal = await store.reserve(request)
        if refusal is not None and refusal.kind == BUDGET and quota.downgrades:
            return await self._downgrade(store, quota, ctx, request, refusal)
        return request, refusal

    async def _downgrade(
        self,
        store: QuotaStore,
        quota: TeamQuota,
        ctx: RequestContext,
        request: QuotaRequest,
        refusal: Refusal,
    ) -> tuple[QuotaRequest, Refusal | None]:
        """Serve a tiered alias by its fast tier, charged past the budget, instead of refusing."""
        tiers = self.tiers.get(ctx.alias) if ctx.alias else None
        fast = tiers.get("fast") if tiers else None
        if fast is None or fast == ctx.model:
            return request, refusal
        cost = self.gov.prices.cost_micros(fast, None, request.units)
        cheaper = quota.request(request.units, cost, request.now, enforce_budget=False)
        again = await store.reserve(cheaper)
        if again is not None:  # a rate limit: report that one
            return cheaper, again
        self.gov.metrics.budget_downgrades.labels(ctx.team, refusal.limit).inc()
        ctx.warnings.append(
            f"team '{ctx.team}' has used its {_period(refusal)} budget (budget.{refusal.limit}): "
            f"served by the fast tier '{fast}' of '{ctx.alias}' instead of '{ctx.model}'"
        )
        ctx.model = fast
        tracing.event("budget.downgrade", budget=refusal.limit, model=fast)
        self.gov.alerts.events.repeating(
            TIER_DOWNGRADE, ctx.team, team=ctx.team, budget=refusal.limit, alias=ctx.alias,
            model=fast,
        )
        await self.gov.usage.event(ctx.team, fast, DOWNGRADED)
        return cheaper, None

    async def _refuse(self, ctx: RequestContext, request: QuotaRequest, refusal: Refusal) -> None:
        if refusal.kind == BUDGET:
            self.gov.metrics.budget_rejections.labels(ctx.team, refusal.limit).inc()
            await self.gov.usage.event(ctx.team, ctx.model, REJECTED_BUDGET)
            raise _budget_error(ctx.team, request, refusal)
        self.gov.metrics.ratelimit_rejections.labels(ctx.team, refusal.limit).inc()
        await self.gov.usage.event(ctx.team, ctx.model, REJECTED_RATE)
        raise _rate_error(ctx.team, request, refusal)

    async def _adjust(
        self, store: QuotaStore, request: QuotaRequest, units: int, cost: int
    ) -> None:
        try:
            await store.adjust(request, units, cost)
        except StoreUnavailable as exc:
            self.gov.metrics.governance_store_errors.labels("limits", "settle").inc()
            self.gov.warn_not_settled(team=request.team, error=str(exc)[:200])


def _period(refusal: Refusal) -> str:
    return refusal.window.describe() if refusal.window else refusal.limit


def _rate_error(team: str, request: QuotaRequest, refusal: Refusal) -> ApiError:
    gcra = request.requests if refusal.limit == REQUESTS else request.unit_rate
    what = "requests" if refusal.limit == REQUESTS else "search units"
    per_minute = gcra.per_minute if gcra is not None else 0
    return ApiError(
        429,
        f"rate limit exceeded: team '{team}' may use {per_minute} {what} per minute "
        f"(rate_limit.{refusal.limit}); retry in {refusal.retry_after_s:.1f} s",
        retry_after_s=refusal.retry_after_s,
    )


def _budget_error(team: str, request: QuotaRequest, refusal: Refusal) -> ApiError:
    window = refusal.window
    assert window is not None
    resets = datetime.fromtimestamp(window.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ApiError(
        429,
        f"budget exhausted: team '{team}' has spent {dollars(refusal.spent_micros)} of its "
        f"{_period(refusal)} budget of {dollars(window.limit_micros)} (budget.{refusal.limit}) "
        f"and this request needs about {dollars(request.cost_micros)}; the budget resets at "
        f"{resets} (in {_duration(refusal.retry_after_s)})",
        retry_after_s=refusal.retry_after_s,
    )


def dollars(micros: int) -> str:
    """$0.0025, $2.50, $20.00: cents always, smaller digits when there are any."""
    text = f"{usd(micros):.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    return " ".join([*parts, f"{minutes}m"])
