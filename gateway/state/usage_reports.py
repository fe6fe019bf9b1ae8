"""Reading usage back: the one reader behind `/admin/usage`, `rerank-gateway usage` and the
status page.

With a ledger, reports come from its daily rollups (any period it still holds, grouped by
team, key, model or deployment); without one, from the daily counters in Redis or in this
process. Either way a report has the same shape (`policies.money.usage.build_report`). Nothing
here writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from policies.money.ledger_pg import PostgresLedger
from policies.money.usage import (
    DEFAULT_GROUPS,
    Group,
    UsageStore,
    build_report,
    days_between,
    store_groups,
)

Clock = Callable[[], float]
LEDGER = "ledger"
SHARED = "all replicas"
LOCAL = "this process"


class UsageReports:
    def __init__(
        self,
        teams: Sequence[str],
        clock: Clock,
        *,
        ledger: PostgresLedger | None = None,
        store: UsageStore | None = None,
        shared: bool = False,
    ) -> None:
        self.teams = list(teams)  # whose usage a report lists by default
        self.clock = clock
        self.ledger = ledger
        self.store = store
        self.scope = LEDGER if ledger is not None else SHARED if shared else LOCAL

    async def report(
        self,
        teams: Sequence[str],
        first: date,
        last: date,
        by: Sequence[str] = DEFAULT_GROUPS,
    ) -> dict[str, Any]:
        """Usage of `teams` over [first, last], one row per group of `by`. Raises
        ValueError for a grouping this source cannot answer, StoreUnavailable or
        LedgerUnavailable when the source is unreachable."""
        report = build_report(await self._groups(teams, first, last, by), first, last)
        report["scope"] = self.scope
        report["group_by"] = list(by)
        return report

    async def team_totals(self, team: str, days: Sequence[date]) -> Counter[str]:
        """The team's counters summed over `days` (consecutive)."""
        groups = await self._groups([team], days[0], days[-1], ("team",))
        total: Counter[str] = Counter()
        for _, counts in groups:
            total.update(counts)
        return total

    async def daily_cost(self, first: date, last: date) -> dict[str, dict[date, int]]:
        """Cost per team and day (micro-dollars), for the status page's chart."""
        if self.ledger is not None:
            return await self.ledger.daily_cost(first, last)
        found: dict[str, dict[date, int]] = {}
        assert self.store is not None
        for team in self.teams:
            for name in days_between(first, last):
                counts = _sum(await self.store.read(team, [name]))
                if counts.get("cost_micros"):
                    found.setdefault(team, {})[date.fromisoformat(name)] = counts["cost_micros"]
        return found

    async def _groups(
        self, teams: Sequence[str], first: date, last: date, by: Sequence[str]
    ) -> list[Group]:
        if self.ledger is None:
            assert self.store is not None
            return await store_groups(self.store, teams, first, last, by)
        rows = await self.ledger.rollups(first, last, teams, by)
        return [
            ({g: (row[g] or None) for g in by}, {k: v for k, v in row.items() if k not in by})
            for row in rows
        ]


def _sum(slots: Mapping[Any, Counter[str]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for counts in slots.values():
        total.update(counts)
    return total
