"""Reserving a request's share of a team's rate limits and budgets, and settling it.

`TeamQuota` turns a team's config into a `QuotaRequest` (the units and cost of one
request, the limiters and budget windows that apply now). A `QuotaStore` admits or
refuses it in one atomic step: every limit has room, and then all are charged, or
nothing is charged. `adjust` later moves the charge to the real figure (or back to
zero: a refund). Two stores implement this: `MemoryQuotaStore` for one process and
`policies.money.redis_quota.RedisQuotaStore` for replicas sharing Redis.

Budgets that survive the store: with a durable ledger, a request asks the store to
refuse with kind `rebuild` (`QuotaRequest.rebuild_missing`) when the team's spend for the
period is not known (the store lost it, or this process never saw it), instead of
starting again from zero; the caller then seeds the period from the ledger
(`MemoryQuotaStore.seed`, `RedisQuotaStore.finish_rebuild`) and asks again. A `Hold`
names the incarnation of each budget counter the reservation was charged to, so that its
settlement lands whole in a counter rebuilt meanwhile (see `policies.money.redis_quota`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from policies.money.budget import BudgetConfig, Window, fits, windows
from policies.money.ratelimit import Gcra, RateLimitConfig, limiters, retry_seconds, to_us

RATE_LIMIT = "rate_limit"
BUDGET = "budget"
REBUILD = "rebuild"  # the team's spend in a budget period is unknown: seed it first


class StoreUnavailable(Exception):
    """The shared store (Redis) could not be reached or answered an error."""


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    team: str
    now: float  # epoch seconds
    units: int
    cost_micros: int
    requests: Gcra | None
    unit_rate: Gcra | None
    windows: tuple[Window, ...]
    enforce_budget: bool = True  # False: charge the budget but admit past it
    rebuild_missing: bool = False  # a lost spend counter is refused as REBUILD, not zero


@dataclass(frozen=True, slots=True)
class Hold:
    """An admitted reservation: the incarnation of each budget window's counter it was
    charged to (empty for stores that cannot lose a counter while running)."""

    generations: tuple[str, ...] = ()


HELD = Hold()


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a settled job was finally charged, under its ledger event's id: a counter
    rebuilt since the reservation takes it whole, a lost one records it for the rebuild."""

    event_id: bytes
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused and when to retry. For a rate limit, `retry_after_s` is
    the wait until every limit admits the same request (the longest, named by `limit`),
    in whole seconds rounded up, as Retry-After says it; for a budget, the time until
    the window resets."""

    kind: str  # rate_limit | budget | rebuild
    limit: str  # requests_per_minute | search_units_per_minute | usd_per_day | usd_per_month
    retry_after_s: float
    spent_micros: int = 0  # budgets: what the window has used
    window: Window | None = None


class QuotaStore(Protocol):
    async def reserve(self, request: QuotaRequest) -> Refusal | Hold:
        """Charge every limit of `request` and hold it, or charge nothing and refuse."""
        ...

    async def adjust(
        self,
        request: QuotaRequest,
        hold: Hold,
        units_delta: int,
        cost_delta_micros: int,
        settled: Settlement | None = None,
    ) -> None:
        """Move a reservation's search units and cost by the deltas (negative: refund);
        `settled` when this settles a billed job."""
        ...

    async def spent(self, team: str, windows: tuple[Window, ...]) -> dict[str, int]:
        """What each budget window has charged so far (micro-dollars), by budget name."""
        ...


@dataclass(frozen=True, slots=True)
class TeamQuota:
    team: str
    requests: Gcra | None
    unit_rate: Gcra | None
    budget: BudgetConfig | None

    @classmethod
    def of(
        cls, team: str, rate: RateLimitConfig | None, budget: BudgetConfig | None
    ) -> TeamQuota | None:
        if rate is None and budget is None:
            return None
        requests, units = limiters(rate)
        return cls(team, requests, units, budget)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Which kinds of limit the team has, for the store-down policy."""
        rate = (RATE_LIMIT,) if self.requests or self.unit_rate else ()
        return rate + ((BUDGET,) if self.budget else ())

    @property
    def downgrades(self) -> bool:
        return self.budget is not None and self.budget.on_exhausted == "downgrade"

    def request(
        self,
        units: int,
        cost_micros: int,
        now: float,
        *,
        enforce_budget: bool = True,
        rebuild_missing: bool = False,
    ) -> QuotaRequest:
        return QuotaRequest(
            team=self.team,
            now=now,
            units=units,
            cost_micros=cost_micros,
            requests=self.requests,
            unit_rate=self.unit_rate,
            windows=windows(self.budget, now),
            enforce_budget=enforce_budget,
            rebuild_missing=rebuild_missing and self.budget is not None,
        )


class MemoryQuotaStore:
    """Counters in this process. Atomic because nothing in a method awaits. The same
    arithmetic as the Redis store's script (integer microseconds, the longest wait)."""

    def __init__(self) -> None:
        self._tats: dict[tuple[str, str], int] = {}  # (team, limit) -> GCRA TAT (us)
        self._spent: dict[
            tuple[str, str], tuple[str, int]
        ] = {}  # (team, budget) -> (period, micros)
        self._kept: set[str] = set()  # teams whose spend this process has kept since start

    async def reserve(self, request: QuotaRequest) -> Refusal | Hold:
        team, now = request.team, request.now
        if request.rebuild_missing and team not in self._kept and request.windows:
            return Refusal(REBUILD, request.windows[0].name, 0.0)
        for window in request.windows:
            spent = self._spent_in(team, window)
            if request.enforce_budget and not fits(spent, request.cost_micros, window):
                return Refusal(BUDGET, window.name, window.resets_at - now, spent, window)
        now_us = to_us(now)
        new_tats: list[tuple[tuple[str, str], int]] = []
        longest: tuple[int, str] | None = None
        for gcra, cost in cells(request):
            verdict = gcra.check(self._tats.get((team, gcra.name)), now_us, cost)
            if not verdict.allowed and (longest is None or verdict.wait_us > longest[0]):
                longest = (verdict.wait_us, gcra.name)
            new_tats.append(((team, gcra.name), verdict.tat_us))
        if longest is not None:
            return Refusal(RATE_LIMIT, longest[1], retry_seconds(longest[0]))
        self._tats.update(new_tats)
        for window in request.windows:
            spent = self._spent_in(team, window)
            self._spent[team, window.name] = (window.period, spent + request.cost_micros)
        return HELD

    def seed(self, team: str, spent: dict[Window, int]) -> None:
        """Start the team's budget periods from what the ledger says they spent."""
        for window, micros in spent.items():
            self._spent[team, window.name] = (window.period, micros)
        self._kept.add(team)

    def needs_seed(self, team: str) -> bool:
        return team not in self._kept

    async def adjust(
        self,
        request: QuotaRequest,
        hold: Hold,
        units_delta: int,
        cost_delta_micros: int,
        settled: Settlement | None = None,
    ) -> None:
        gcra = request.unit_rate
        if gcra is not None and units_delta and (request.team, gcra.name) in self._tats:
            self._tats[request.team, gcra.name] += units_delta * gcra.interval_us
        for window in request.windows:
            period, spent = self._spent.get((request.team, window.name), ("", 0))
            if period == window.period:  # a period that has ended is not touched
                self._spent[request.team, window.name] = (period, spent + cost_delta_micros)

    async def spent(self, team: str, windows: tuple[Window, ...]) -> dict[str, int]:
        return {window.name: self._spent_in(team, window) for window in windows}

    def _spent_in(self, team: str, window: Window) -> int:
        period, spent = self._spent.get((team, window.name), ("", 0))
        return spent if period == window.period else 0


def cells(request: QuotaRequest) -> list[tuple[Gcra, int]]:
    """The rate limiters a request is charged on, with its cost in each."""
    pairs = ((request.requests, 1), (request.unit_rate, request.units))
    return [(gcra, cost) for gcra, cost in pairs if gcra is not None and cost > 0]
