"""The team ledger: reserve what a job will cost before it goes upstream, settle after.

The budget layer of the scoring chain (`gateway.chain.budget`) talks to governance only
through this: `admit` reserves the estimated search units and their cost against the
team's rate limits and budgets in one atomic step (or refuses with 429/400), `settle`
corrects the reservation to the real usage and the price of the deployment that served
and records usage, `refund` returns it when the upstream call failed.

Cost is in micro-dollars whatever unit the upstream bills: a reservation prices the
estimated search units, tokens and one call at the model's dearest deployment
(`policies.pricing`); the settlement prices what the serving deployment reported, or the
same estimate when it reported nothing.

Over budget, a team whose budget says `on_exhausted: downgrade` and that asked for a
tiered alias is not refused: `admit` raises `Downgrade`, a signal for the downgrade layer
(outside the cache) to run the job again with the fast tier's facts; that run is
admitted past the budget. So every cache key, reservation and usage record names the
model that actually scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import ApiError, bad_request
from gateway.observe import tracing
from gateway.observe.events import TIER_DOWNGRADE
from gateway.state.governance import Governance
from policies.budget import usd
from policies.pricing import Usage
from policies.quota import BUDGET, QuotaRequest, QuotaStore, Refusal, StoreUnavailable, TeamQuota
from policies.ratelimit import REQUESTS
from policies.usage import DOWNGRADED, REJECTED_BUDGET, REJECTED_RATE


class Downgrade(Exception):
    """Over budget: serve the job with the alias's fast tier `model` instead of refusing."""

    def __init__(self, model: str, limit: str, warning: str) -> None:
        super().__init__(warning)
        self.model = model
        self.limit = limit
        self.warning = warning


@dataclass(frozen=True, slots=True)
class Admission:
    """A reservation held for one job, and the store that holds it."""

    request: QuotaRequest
    store: QuotaStore


@dataclass(frozen=True, slots=True)
class Claim:
    """What a job asks the ledger for (from its facts and documents)."""

    team: str
    model: str
    alias: str | None
    over_budget: str | None  # the budget limit it is admitted past (a downgrade)
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None


class Ledger:
    def __init__(self, governance: Governance) -> None:
        self.gov = governance
        self.tiers: Mapping[str, Mapping[str, str]] = governance.tiers

    async def admit(self, claim: Claim) -> Admission | None:
        """Reserve or raise 429/400 (or `Downgrade`); None when the team has no quota.

        When the shared store is down and the team's limits fail open, this replica's
        own counters stand in (each replica then enforces the limits on its own)."""
        quota = self.gov.quotas.get(claim.team)
        if quota is None:
            return None
        gov = self.gov
        units = gov.rules.estimate(claim.query, claim.documents, claim.max_tokens_per_doc)
        if quota.unit_rate is not None and not quota.unit_rate.fits_ever(units):
            gov.metrics.ratelimit_rejections.labels(claim.team, quota.unit_rate.name).inc()
            await gov.usage.event(claim.team, claim.model, REJECTED_RATE)
            raise bad_request(
                f"this request needs about {units} search units, more than team "
                f"'{claim.team}' may use in a minute (rate_limit.search_units_per_minute="
                f"{quota.unit_rate.per_minute}); send fewer or shorter documents"
            )
        tokens = gov.rules.estimate_tokens(claim.query, claim.documents, claim.max_tokens_per_doc)
        cost = gov.prices.charge(claim.model, None, Usage(units, tokens, 1))
        request = quota.request(units, cost, gov.clock(), enforce_budget=claim.over_budget is None)
        store = gov.quota_store
        try:
            refusal = await store.reserve(request)
        except StoreUnavailable:
            gov.store_down(quota)  # raises 503 when the limits fail closed
            store = gov.local_quota
            refusal = await store.reserve(request)
        tracing.event(
            "budget.reserve",
            units=request.units,
            outcome=refusal.limit if refusal is not None else "admitted",
            shared=store is gov.quota_store,
        )
        if refusal is not None:
            await self._refuse(quota, claim, request, refusal)
        return Admission(request, store)

    async def settle(
        self, admission: Admission | None, claim: Claim, deployment: str | None, usage: Usage
    ) -> None:
        """Correct the reservation to what was billed, and record the usage (once)."""
        gov = self.gov
        cost = gov.prices.charge(claim.model, deployment, usage)
        if admission is not None:
            reserved = admission.request
            units = usage.search_units - reserved.units
            await self._adjust(admission, units, cost - reserved.cost_micros)
            gov.alerts.settled(admission.store, reserved)  # thresholds, in the background
        await gov.usage.served(
            claim.team, claim.model, deployment or "", len(claim.documents), usage, cost
        )

    async def refund(self, admission: Admission | None) -> None:
        if admission is not None:
            reserved = admission.request
            await self._adjust(admission, -reserved.units, -reserved.cost_micros)

    async def _refuse(
        self, quota: TeamQuota, claim: Claim, request: QuotaRequest, refusal: Refusal
    ) -> None:
        gov, team = self.gov, claim.team
        if refusal.kind == BUDGET:
            fast = self._fast_tier(quota, claim)
            if fast is not None:
                raise Downgrade(
                    fast,
                    refusal.limit,
                    f"team '{team}' has used its {_period(refusal)} budget "
                    f"(budget.{refusal.limit}): served by the fast tier '{fast}' of "
                    f"'{claim.alias}' instead of '{claim.model}'",
                )
            gov.metrics.budget_rejections.labels(team, refusal.limit).inc()
            await gov.usage.event(team, claim.model, REJECTED_BUDGET)
            note = ""
            if quota.downgrades and claim.alias and gov.stops_downgrade(claim.alias, team):
                note = (
                    f"; not downgraded to the fast tier of '{claim.alias}': its rankings for "
                    "this team agree with pro's below shadow.min_ndcg (see GET /admin/tiers)"
                )
            raise _budget_error(team, request, refusal, note)
        gov.metrics.ratelimit_rejections.labels(team, refusal.limit).inc()
        await gov.usage.event(team, claim.model, REJECTED_RATE)
        raise _rate_error(team, request, refusal)

    def _fast_tier(self, quota: TeamQuota, claim: Claim) -> str | None:
        """The model a budget downgrade would serve this claim with, if any."""
        if not quota.downgrades or claim.alias is None or claim.over_budget is not None:
            return None
        if self.gov.stops_downgrade(claim.alias, claim.team):
            return None  # fast's agreement with pro fell below the alias's min_ndcg
        fast = self.tiers.get(claim.alias, {}).get("fast")
        return fast if fast is not None and fast != claim.model else None

    async def downgraded(self, team: str, model: str, limit: str) -> None:
        """Count a request served by `model` past the team's budget `limit`."""
        self.gov.metrics.budget_downgrades.labels(team, limit).inc()
        tracing.event("budget.downgrade", budget=limit, model=model)
        self.gov.alerts.events.repeating(TIER_DOWNGRADE, team, team=team, budget=limit, model=model)
        await self.gov.usage.event(team, model, DOWNGRADED)

    async def _adjust(self, admission: Admission, units: int, cost: int) -> None:
        try:
            await admission.store.adjust(admission.request, units, cost)
        except StoreUnavailable as exc:
            self.gov.metrics.governance_store_errors.labels("limits", "settle").inc()
            self.gov.warn_not_settled(team=admission.request.team, error=str(exc)[:200])


def _period(refusal: Refusal) -> str:
    return refusal.window.describe() if refusal.window else refusal.limit


def _rate_error(team: str, request: QuotaRequest, refusal: Refusal) -> ApiError:
    gcra = request.requests if refusal.limit == REQUESTS else request.unit_rate
    what = "requests" if refusal.limit == REQUESTS else "search units"
    per_minute = gcra.per_minute if gcra is not None else 0
    wait_s = max(1, math.ceil(refusal.retry_after_s))  # the same whole seconds as Retry-After
    return ApiError(
        429,
        f"rate limit exceeded: team '{team}' may use {per_minute} {what} per minute "
        f"(rate_limit.{refusal.limit}); retry in {wait_s} s",
        retry_after_s=refusal.retry_after_s,
    )


def _budget_error(
    team: str, request: QuotaRequest, refusal: Refusal, note: str = ""
) -> ApiError:
    """402, Cohere's status for a billing limit: unlike 429, the official SDKs (and so
    LangChain and LlamaIndex) do not retry it, so an over-budget call fails at once
    instead of sleeping through retries that cannot succeed before the reset. Retry-After
    still says when the budget resets, for callers that schedule work."""
    window = refusal.window
    assert window is not None
    resets = datetime.fromtimestamp(window.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ApiError(
        402,
        f"budget exhausted: team '{team}' has spent {dollars(refusal.spent_micros)} of its "
        f"{_period(refusal)} budget of {dollars(window.limit_micros)} (budget.{refusal.limit}) "
        f"and this request needs about {dollars(request.cost_micros)}; the budget resets at "
        f"{resets} (in {_duration(refusal.retry_after_s)}){note}. Retrying sooner will not help: "
        "ask the gateway's operators to raise the budget, or wait for the reset",
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
