"""Recording usage: one event per billed job, cache saving and counted refusal.

`UsageRecorder` is what the rest of the gateway calls when something is worth a line in
the usage report. It builds the event (`policies.money.usage_events`), counts the Prometheus
series that go with it, and hands the event on: to the durable ledger's buffer when a
`ledger` is configured (no I/O on the request path), else to the daily counter store
(Redis shared by replicas, or this process's memory). A store failure never fails the
request it describes: it is logged and counted (`rerank_governance_store_errors_total`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics, child
from gateway.state.usage_ledger import UsageLedger
from policies.money.billing import BillingRules
from policies.money.pricing import FREE, KINDS, MICROS_PER_USD, PriceTable, Usage
from policies.money.quota import StoreUnavailable
from policies.money.usage import UsageStore, day_of
from policies.money.usage_events import REPLAYED, SAVED, SERVED, UsageEvent, counts_of

Clock = Callable[[], float]
_PRICE_KIND = {kind: number for number, kind in enumerate(KINDS, start=1)}


@dataclass(frozen=True, slots=True)
class Payer:
    """Whose request it is: the team, its key and the model (or alias) it asked for."""

    team: str
    key: str = ""
    asked: str = ""


class UsageRecorder:
    def __init__(
        self,
        prices: PriceTable,
        rules: BillingRules,
        metrics: Metrics,
        clock: Clock,
        *,
        ledger: UsageLedger | None = None,
        store: UsageStore | None = None,
    ) -> None:
        if (ledger is None) == (store is None):
            raise ValueError("usage goes to exactly one of a ledger and a counter store")
        self.prices = prices
        self.rules = rules
        self.metrics = metrics
        self.clock = clock
        self.ledger = ledger
        self.store = store
        self._warn = ThrottledWarning("usage_not_recorded")

    def new_event_id(self) -> bytes | None:
        """The id the next served event will carry, when there is a ledger (a budget
        settlement names it, see `policies.money.redis_quota`)."""
        return self.ledger.new_id() if self.ledger is not None else None

    async def served(
        self,
        payer: Payer,
        model: str,
        deployment: str,
        documents: int,
        usage: Usage,
        cost: int,
        event_id: bytes | None = None,
        replayed: bool = False,
    ) -> None:
        """One job that went upstream and was billed (called once, on settle); `replayed`:
        billed as a call but answered with scores another team's call paid for."""
        price = self.prices.price(model, deployment or None)
        child(self.metrics.search_units, payer.team, model, deployment).inc(usage.search_units)
        child(self.metrics.cost_usd, payer.team, model, deployment).inc(cost / MICROS_PER_USD)
        await self._record(
            UsageEvent(
                self.clock(),
                payer.team,
                REPLAYED if replayed else SERVED,
                payer.key,
                payer.asked or model,
                model,
                deployment,
                price_kind=_PRICE_KIND[price.kind],
                billed=1 if price.kind == FREE else price.billed(usage),
                documents=documents,
                search_units=usage.search_units,
                tokens=usage.tokens,
                calls=usage.calls,
                cost_micros=cost,
            ),
            event_id,
        )

    async def saved(
        self,
        payer: Payer,
        model: str,
        query: str,
        documents: Sequence[str],
        sent: Sequence[str],
        max_tokens_per_doc: int | None,
        hits: int,
    ) -> None:
        """What the cache saved a request: the units of its documents that it did not send
        upstream itself, estimated as a reservation would, and valued at the model's
        dearest deployment price (the one a reservation uses), so savings and spend add up."""
        rules = self.rules
        units = max(
            0,
            rules.estimate(query, documents, max_tokens_per_doc)
            - rules.estimate(query, sent, max_tokens_per_doc),
        )
        tokens = max(
            0,
            rules.estimate_tokens(query, documents, max_tokens_per_doc)
            - rules.estimate_tokens(query, sent, max_tokens_per_doc),
        )
        if units <= 0 and tokens <= 0:
            return
        cost = self.prices.charge(model, None, Usage(units, tokens))
        child(self.metrics.saved_search_units, payer.team, model).inc(units)
        child(self.metrics.saved_usd, payer.team, model).inc(cost / MICROS_PER_USD)
        event = UsageEvent(
            self.clock(),
            payer.team,
            SAVED,
            payer.key,
            payer.asked or model,
            model,
            documents=len(documents),
            cache_hits=hits,
            cache_misses=len(documents) - hits,
            saved_units=units,
            saved_tokens=tokens,
            saved_cost_micros=cost,
        )
        await self._record(event)

    async def counted(self, payer: Payer, model: str, kind: int) -> None:
        """A refusal, truncation or downgrade (no deployment involved)."""
        event = UsageEvent(self.clock(), payer.team, kind, payer.key, payer.asked or model, model)
        await self._record(event)

    async def _record(self, event: UsageEvent, event_id: bytes | None = None) -> None:
        if self.ledger is not None:
            self.ledger.add(event, event_id)
            return
        assert self.store is not None
        try:
            await self.store.add(
                event.team, day_of(event.at), event.served, event.deployment, counts_of(event)
            )
        except StoreUnavailable as exc:
            self.metrics.governance_store_errors.labels("usage", "record").inc()
            self._warn(team=event.team, model=event.served, error=str(exc)[:200])
