"""Seeding a team's lost budget counters from the usage ledger, once, across all replicas.

Redis is where budgets are enforced, not where spend is recorded. When a team's counter
for the current period is gone (FLUSHALL, a restart without persistence, a failover told
to forget), a ledger-backed gateway does not let the team start again at zero: its next
reservation is refused with `rebuild` (`policies.money.redis_quota`), and one replica, under the
team's `rebuilding` lock, seeds the counter:

1. write its own buffered events, then wait `ledger.rebuild_wait_s` so that every other
   replica's buffered events (written every `flush_interval_s`) land too;
2. in one snapshot of the ledger: read the team's spend in each period from the rollups,
   seed the counters with it plus the settlements kept while they were gone (one Redis
   script), and ask which of those the snapshot already counted;
3. take those back out of the counter.

The team's other requests wait meanwhile (they retry their reservation), other teams do
not notice. With one process (`limits_backend: memory`) the counter is seeded when this
process first sees the team: a restart does not reset budgets either.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import date

from gateway.observe.events import BUDGET_REBUILT, Events
from gateway.observe.metrics import Metrics
from gateway.state.usage_ledger import UsageLedger
from policies.money.budget import Window
from policies.money.quota import MemoryQuotaStore, QuotaStore
from policies.money.redis_quota import RedisQuotaStore, new_incarnation

Clock = Callable[[], float]
_LOCK_MARGIN_S = 10.0  # the lock outlives a rebuild that stalls on a slow ledger


class BudgetRebuilder:
    def __init__(
        self,
        store: QuotaStore,
        ledger: UsageLedger,
        metrics: Metrics,
        clock: Clock,
        wait_s: float,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self.events = Events(metrics)
        self.clock = clock
        self.wait_s = wait_s
        self._local: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def rebuild(self, team: str, windows: tuple[Window, ...]) -> bool:
        """Seed `team`'s counters of `windows`; False when another replica is at it (the
        caller retries its reservation shortly). Raises LedgerUnavailable."""
        async with self._local[team]:  # this process's requests of the team wait here
            if isinstance(self.store, MemoryQuotaStore):
                if self.store.needs_seed(team):
                    await self._seed_memory(self.store, team, windows)
                return True
            assert isinstance(self.store, RedisQuotaStore)
            token = uuid.uuid4().hex
            ttl_s = self.wait_s + 3 * self.ledger.settings.timeout_s + _LOCK_MARGIN_S
            if not await self.store.lock_rebuild(team, token, ttl_s):
                self.metrics.budget_rebuilds.labels(team, "waited").inc()
                return False
            try:
                await self._seed_shared(self.store, team, windows)
            except BaseException:
                self.metrics.budget_rebuilds.labels(team, "failed").inc()
                raise
            finally:
                await asyncio.shield(self.store.unlock_rebuild(team, token))
            return True

    async def _seed_memory(
        self, store: MemoryQuotaStore, team: str, windows: tuple[Window, ...]
    ) -> None:
        await self.ledger.flush()
        async with self.ledger.store.snapshot() as snap:
            spent = {w: await snap.spent(team, *w.days()) for w in windows}
        store.seed(team, spent)
        self._rebuilt(team, spent)

    async def _seed_shared(
        self, store: RedisQuotaStore, team: str, windows: tuple[Window, ...]
    ) -> None:
        await self.ledger.flush()
        await asyncio.sleep(self.wait_s)  # every replica's buffered events land meanwhile
        await self.ledger.flush()
        incarnation = new_incarnation()
        async with self.ledger.store.snapshot() as snap:
            spent = {w: await snap.spent(team, *w.days()) for w in windows}
            late = await store.finish_rebuild(team, spent, incarnation, self.clock())
            ids = [event_id for entries in late.values() for event_id in entries]
            counted = await snap.present(ids, *_span(windows)) if ids else set()
        deltas = {
            window: -sum(cost for event_id, cost in entries.items() if event_id in counted)
            for window, entries in late.items()
        }
        if any(deltas.values()):
            await store.correct(team, incarnation, deltas)
        self._rebuilt(team, {w: spent[w] + sum(late.get(w, {}).values()) + deltas.get(w, 0)
                             for w in windows})

    def _rebuilt(self, team: str, spent: dict[Window, int]) -> None:
        self.metrics.budget_rebuilds.labels(team, "rebuilt").inc()
        self.events.emit(
            BUDGET_REBUILT,
            level="info",
            team=team,
            spent_micros={w.name: micros for w, micros in spent.items()},
            source="ledger",
        )


def _span(windows: tuple[Window, ...]) -> tuple[date, date]:
    days = [day for window in windows for day in window.days()]
    return min(days), max(days)
