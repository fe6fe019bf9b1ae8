"""Team accounts: reserve what a job will cost before it goes upstream, settle after.

The budget layer of the scoring chain (`gateway.chain.budget`) talks to budgets and rate
limits only through this: `admit` reserves the estimated search units and their cost
against the team's rate limits and budgets in one atomic step (or refuses with 429/402/400),
`settle` corrects the reservation to the real usage and the price of the deployment that
served and records the usage event, `refund` returns it when the upstream call failed.

Cost is in micro-dollars whatever unit the upstream bills: a reservation prices the
estimated search units, tokens and one call at the model's dearest deployment
(`policies.money.pricing`); the settlement prices what the serving deployment reported, or the
same estimate when it reported nothing.

Over budget, a team whose budget says `on_exhausted: downgrade` and that asked for a
tiered alias is not refused: `admit` raises `Downgrade`, a signal for the downgrade layer
(outside the cache) to run the job again with the fast tier's facts; that run is
admitted past the budget. So every cache key, reservation and usage record names the
model that actually scores.

When the shared store (Redis) is down, limits that fail open count on this replica's own
counters meanwhile; a budget counter the store lost is seeded from the usage ledger first
(`gateway.state.budget_rebuild`), so losing Redis never resets a team's spend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import ApiError, bad_request
from gateway.observe import tracing
from gateway.observe.events import BUDGETS_FORGOTTEN, TIER_DOWNGRADE, Events
from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics
from gateway.state.alerts import BudgetAlerts
from gateway.state.budget_rebuild import BudgetRebuilder
from gateway.state.usage import Payer, UsageRecorder
from policies.money.billing import BillingRules
from policies.money.budget import usd, windows
from policies.money.ledger_pg import LedgerUnavailable
from policies.money.pricing import PriceTable, Usage
from policies.money.quota import (
    BUDGET,
    REBUILD,
    Hold,
    MemoryQuotaStore,
    QuotaRequest,
    QuotaStore,
    Refusal,
    Settlement,
    StoreUnavailable,
    TeamQuota,
)
from policies.money.ratelimit import REQUESTS
from policies.money.redis_quota import RedisQuotaStore
from policies.money.usage_events import (
    DOWNGRADED_KIND,
    REJECTED_BUDGET_KIND,
    REJECTED_RATE_KIND,
)

Clock = Callable[[], float]
STORE_RETRY_S = 5.0
_REBUILD_POLL_S = 0.05


class Downgrade(BaseException):
    """Over budget: serve the job with the alias's fast tier `model` instead of refusing.

    A signal for the downgrade layer, not an error: like asyncio's CancelledError it is a
    BaseException, so no `except Exception` on its way up (the cache, coalescing, a
    caller's error answer) takes it for a failure. What it passes cleans up as for any
    exit: the budget layer refunds in `except BaseException`, a coalescing flight is
    released for its followers in `except BaseException` and its task's done callback."""

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
    hold: Hold


@dataclass(frozen=True, slots=True)
class Claim:
    """What a job asks its team's account for (from its facts and documents)."""

    payer: Payer
    model: str
    alias: str | None
    over_budget: str | None  # the budget limit it is admitted past (a downgrade)
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None

    @property
    def team(self) -> str:
        return self.payer.team


@dataclass(frozen=True)
class Policy:
    """How an account behaves when its store cannot answer (`limits.on_redis_error`)."""

    rate_limit_closed: bool = False
    budget_closed: bool = True


class Accounts:
    def __init__(
        self,
        quotas: Mapping[str, TeamQuota],
        store: QuotaStore,
        *,
        prices: PriceTable,
        rules: BillingRules,
        usage: UsageRecorder,
        alerts: BudgetAlerts,
        metrics: Metrics,
        clock: Clock,
        tiers: Mapping[str, Mapping[str, str]],
        stops_downgrade: Callable[[str, str], bool],
        policy: Policy = Policy(),
        rebuilder: BudgetRebuilder | None = None,
        rebuild_timeout_s: float = 10.0,
    ) -> None:
        self.quotas = dict(quotas)
        self.store = store
        self.prices = prices
        self.rules = rules
        self.usage = usage
        self.alerts = alerts
        self.metrics = metrics
        self.clock = clock
        self.tiers = tiers
        self.stops_downgrade = stops_downgrade  # (alias, team): the shadow guard's verdict
        self.policy = policy
        self.rebuilder = rebuilder  # None: no ledger, a lost counter restarts at zero
        self.rebuild_timeout_s = rebuild_timeout_s
        self.events = Events(metrics)
        # Stands in for the shared store while it is unreachable, for limits that fail open.
        self.local = MemoryQuotaStore()
        self._warn_down = ThrottledWarning("limits_store_unreachable")
        self._warn_not_settled = ThrottledWarning("reservation_not_settled")

    async def admit(self, claim: Claim) -> Admission | None:
        """Reserve or raise 429/402/400 (or `Downgrade`); None when the team has no quota.

        When the shared store is down and the team's limits fail open, this replica's
        own counters stand in (each replica then enforces the limits on its own)."""
        quota = self.quotas.get(claim.team)
        if quota is None:
            return None
        units = self.rules.estimate(claim.query, claim.documents, claim.max_tokens_per_doc)
        if quota.unit_rate is not None and not quota.unit_rate.fits_ever(units):
            self.metrics.ratelimit_rejections.labels(claim.team, quota.unit_rate.name).inc()
            await self.usage.counted(claim.payer, claim.model, REJECTED_RATE_KIND)
            raise bad_request(
                f"this request needs about {units} search units, more than team "
                f"'{claim.team}' may use in a minute (rate_limit.search_units_per_minute="
                f"{quota.unit_rate.per_minute}); send fewer or shorter documents"
            )
        tokens = self.rules.estimate_tokens(
            claim.query, claim.documents, claim.max_tokens_per_doc
        )
        cost = self.prices.charge(claim.model, None, Usage(units, tokens, 1))
        request = quota.request(
            units,
            cost,
            self.clock(),
            enforce_budget=claim.over_budget is None,
            rebuild_missing=self.rebuilder is not None,
        )
        outcome, store = await self._reserve(quota, request)
        tracing.event(
            "budget.reserve",
            units=request.units,
            outcome=outcome.limit if isinstance(outcome, Refusal) else "admitted",
            shared=store is self.store,
        )
        if isinstance(outcome, Refusal):
            await self._refuse(quota, claim, request, outcome)
        assert isinstance(outcome, Hold)
        return Admission(request, store, outcome)

    async def _reserve(
        self, quota: TeamQuota, request: QuotaRequest
    ) -> tuple[Refusal | Hold, QuotaStore]:
        """Reserve in the shared store, seeding a lost budget counter from the ledger first;
        on this replica's counters when the store is down and the limits fail open."""
        deadline = asyncio.get_running_loop().time() + self.rebuild_timeout_s
        while True:
            try:
                outcome = await self.store.reserve(request)
            except StoreUnavailable:
                self._store_down(quota)  # raises 503 when the limits fail closed
                local = dataclasses.replace(request, rebuild_missing=False)
                return await self.local.reserve(local), self.local
            if not (isinstance(outcome, Refusal) and outcome.kind == REBUILD):
                return outcome, self.store
            assert self.rebuilder is not None
            try:
                seeded = await self.rebuilder.rebuild(quota.team, request.windows)
            except (LedgerUnavailable, StoreUnavailable) as exc:
                return await self._unrebuildable(quota, request, exc), self.local
            if not seeded:  # another replica is seeding it: ask again shortly
                if asyncio.get_running_loop().time() > deadline:
                    raise _rebuilding(quota.team)
                await asyncio.sleep(_REBUILD_POLL_S)

    async def _unrebuildable(
        self, quota: TeamQuota, request: QuotaRequest, exc: Exception
    ) -> Refusal | Hold:
        """The team's budget counter is lost and the ledger cannot seed it right now."""
        self.metrics.governance_store_errors.labels("ledger", "rebuild").inc()
        if self.policy.budget_closed:
            raise ApiError(
                503,
                f"cannot check the budget of team '{quota.team}' right now: its counter is "
                "being rebuilt from the usage ledger, which is unreachable "
                "(limits.on_redis_error.budget is closed); retry shortly",
                retry_after_s=STORE_RETRY_S,
            )
        self._warn_down(team=quota.team, effect="counting on this replica only", error=str(exc))
        local = dataclasses.replace(request, rebuild_missing=False)
        return await self.local.reserve(local)

    async def settle(
        self,
        admission: Admission | None,
        claim: Claim,
        deployment: str | None,
        usage: Usage,
        replayed: bool = False,
    ) -> None:
        """Correct the reservation to what was billed, and record the usage event (once).

        The store is settled first, the event recorded after: a budget rebuild relies on
        that order (`gateway.state.budget_rebuild`)."""
        cost = self.prices.charge(claim.model, deployment, usage)
        event_id = self.usage.new_event_id()
        if admission is not None:
            reserved = admission.request
            settled = Settlement(event_id, cost) if event_id is not None else None
            units = usage.search_units - reserved.units
            await self._adjust(admission, units, cost - reserved.cost_micros, settled)
            self.alerts.settled(admission.store, reserved)  # thresholds, in the background
        await self.usage.served(
            claim.payer,
            claim.model,
            deployment or "",
            len(claim.documents),
            usage,
            cost,
            event_id,
            replayed,
        )

    async def refund(self, admission: Admission | None) -> None:
        if admission is not None:
            reserved = admission.request
            await self._adjust(admission, -reserved.units, -reserved.cost_micros)

    async def downgraded(self, payer: Payer, model: str, limit: str) -> None:
        """Count a request served by `model` past the team's budget `limit`."""
        team = payer.team
        self.metrics.budget_downgrades.labels(team, limit).inc()
        tracing.event("budget.downgrade", budget=limit, model=model)
        self.alerts.events.repeating(TIER_DOWNGRADE, team, team=team, budget=limit, model=model)
        await self.usage.counted(payer, model, DOWNGRADED_KIND)

    async def forget_budgets(self, reason: str) -> None:
        """The shared store may have lost recent writes (a failover, an old snapshot): drop
        every team's current budget counters so the next reservation seeds them from the
        ledger. Only with a ledger; otherwise the counters are the only record."""
        if self.rebuilder is None or not isinstance(self.store, RedisQuotaStore):
            return
        now = self.clock()
        forgotten = []
        for team, quota in self.quotas.items():
            found = windows(quota.budget, now)
            if found:
                try:
                    await self.store.forget(team, found)
                except StoreUnavailable:
                    continue  # the next check tries again
                forgotten.append(team)
        self.events.emit(BUDGETS_FORGOTTEN, teams=forgotten, reason=reason)

    async def _refuse(
        self, quota: TeamQuota, claim: Claim, request: QuotaRequest, refusal: Refusal
    ) -> None:
        team = claim.team
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
            self.metrics.budget_rejections.labels(team, refusal.limit).inc()
            await self.usage.counted(claim.payer, claim.model, REJECTED_BUDGET_KIND)
            note = ""
            if quota.downgrades and claim.alias and self.stops_downgrade(claim.alias, team):
                note = (
                    f"; not downgraded to the fast tier of '{claim.alias}': its rankings for "
                    "this team agree with pro's below shadow.min_ndcg (see GET /admin/tiers)"
                )
            raise _budget_error(team, request, refusal, note)
        self.metrics.ratelimit_rejections.labels(team, refusal.limit).inc()
        await self.usage.counted(claim.payer, claim.model, REJECTED_RATE_KIND)
        raise _rate_error(team, request, refusal)

    def _fast_tier(self, quota: TeamQuota, claim: Claim) -> str | None:
        """The model a budget downgrade would serve this claim with, if any."""
        if not quota.downgrades or claim.alias is None or claim.over_budget is not None:
            return None
        if self.stops_downgrade(claim.alias, claim.team):
            return None  # fast's agreement with pro fell below the alias's min_ndcg
        fast = self.tiers.get(claim.alias, {}).get("fast")
        return fast if fast is not None and fast != claim.model else None

    async def _adjust(
        self, admission: Admission, units: int, cost: int, settled: Settlement | None = None
    ) -> None:
        try:
            await admission.store.adjust(admission.request, admission.hold, units, cost, settled)
        except StoreUnavailable as exc:
            self.metrics.governance_store_errors.labels("limits", "settle").inc()
            self._warn_not_settled(team=admission.request.team, error=str(exc)[:200])

    def _store_down(self, quota: TeamQuota) -> None:
        """The quota store failed: raise 503 if any of the team's limits fails closed."""
        self.metrics.governance_store_errors.labels("limits", "reserve").inc()
        closed = [
            kind.replace("_", " ") + "s"
            for kind in quota.kinds
            if (self.policy.budget_closed if kind == BUDGET else self.policy.rate_limit_closed)
        ]
        if closed:
            raise ApiError(
                503,
                f"cannot check the {' and '.join(closed)} of team '{quota.team}' right now: the "
                "limits store (Redis) is unreachable and they are configured to fail closed "
                "(limits.on_redis_error); retry shortly",
                retry_after_s=STORE_RETRY_S,
            )
        self._warn_down(team=quota.team, effect="counting on this replica only")


def _rebuilding(team: str) -> ApiError:
    return ApiError(
        503,
        f"the budget counter of team '{team}' is being rebuilt from the usage ledger by "
        "another replica; retry shortly",
        retry_after_s=1.0,
    )


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
