"""Depth advice at run time: the pipeline's measurement and (opt-in) cut, the counts'
way to the shared store, and the advice read back for the admin route, the status page,
`rerank-gateway depth` and the gauges. The statistics and decisions are
`policies.quality.depth`; this is their wiring.

On the request path (`plan`, `record`) nothing is counted and nothing leaves the process:
a request appends its size and its top-k positions to its team and model's `Tally`. A
background task folds those into counters and adds them to the store every
`depth.flush_s` (Redis with `state.redis_url`, so every replica's counts meet; this
process's memory otherwise), and every `depth.refresh_s` reads the window back: the
advice, the gauges, and for teams in enforce mode the depth they are cut to, or the
switch back to advise when the explored sample's recall at that depth fell below the
target (an operator event; the switch holds for one window, fleet-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.observe import events
from gateway.observe.logs import ThrottledWarning, log
from gateway.observe.metrics import Metrics, child
from gateway.state import redis_client
from gateway.state.catalog import Catalog
from gateway.state.deployments import TIER_QUANTILE, DeploymentState
from policies.money.billing import BillingRules
from policies.money.pricing import PriceTable
from policies.money.quota import StoreUnavailable
from policies.quality.depth import (
    ADVICE,
    ENFORCE,
    IGNORE,
    MEASURE,
    Advice,
    Costing,
    DepthSettings,
    Enforcer,
    Plan,
    Rule,
    Tally,
    Window,
    advise,
    drifted,
    z_score,
)
from policies.quality.depth_store import DepthStore, MemoryDepthStore
from policies.quality.redis_depth import RedisDepthStore

Clock = Callable[[], float]
MAX_PENDING = 10_000  # folded buckets held while the store is unreachable
_CLOSE_WAIT_S = 1.0  # longest wait for the background task to stop at shutdown
_CLOSE_FLUSH_S = 2.0  # and for the last counts to be written


@dataclass(frozen=True, slots=True)
class Row:
    """One team and model's advice as read from the store."""

    team: str
    model: str
    rule: Rule
    window: Window
    advice: Advice


class DepthBook:
    def __init__(
        self,
        settings: DepthSettings,
        rules: Mapping[str, Rule],
        store: DepthStore,
        costs: Mapping[str, Costing],
        metrics: Metrics,
        billing: BillingRules,
        *,
        labelled_teams: Collection[str] = (),
        clock: Clock = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """`rules`: each configured team's settings (others get the section's);
        `costs`: each model's price and latency model; `labelled_teams`: the teams the
        gauges may name (configured ones, so labels stay bounded)."""
        self.settings = settings
        self.default_rule = Rule.of(settings, None)
        self.rules = dict(rules)
        self.store = store
        self.costs = costs
        self.metrics = metrics
        self.billing = billing
        self.labelled = frozenset(labelled_teams)
        self.clock = clock
        self.rng = rng
        self.enabled = settings.enabled
        self._k = {team: rule.k for team, rule in rules.items()}
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._enforcers: dict[tuple[str, str], Enforcer] = {}
        self._reverted: set[tuple[str, str]] = set()
        self._pending: dict[tuple[str, str, int], Counter[str]] = {}
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._z = z_score(settings.confidence)
        self._warn = ThrottledWarning("depth_store_unreachable")
        self.events = events.Events(metrics)

    @property
    def scope(self) -> str:
        return self.store.scope

    def rule(self, team: str) -> Rule:
        return self.rules.get(team, self.default_rule)

    # ----------------------------------------------------------------- request path

    def plan(self, team: str, model: str, documents: int, top_n: int | None) -> Plan:
        """What depth does to this request (before it is scored)."""
        if not self.enabled:
            return IGNORE
        enforcer = self._enforcers.get((team, model))
        if enforcer is None:
            return MEASURE
        plan = enforcer.plan(documents, top_n)
        if plan.header is not None:
            action = "cut" if plan.cut is not None else "explore"
            child(self.metrics.depth_requests, team, model, action).inc()
        return plan

    def record(
        self,
        plan: Plan,
        team: str,
        model: str,
        order: Sequence[int],
        top_n: int | None,
        query: str,
        texts: Sequence[str],
        max_tokens_per_doc: int | None,
    ) -> None:
        """Keep what this request says about depth: its size, and its top-k positions in
        the caller's list (`order`: the answer's ranking over all `texts`)."""
        if plan is IGNORE:
            return
        tally = self._tallies.get((team, model))
        if tally is None:
            tally = self._tallies[team, model] = Tally()
        documents = len(texts)
        k = top_n or self._k.get(team, self.default_rule.k)
        top = list(order[:k]) if plan.measured and k < documents else None
        if tally.add(documents, top, plan.explored):
            tally.sample(self.billing, query, texts, max_tokens_per_doc)

    # ----------------------------------------------------------------- background

    async def start(self, teams: Callable[[], Iterable[str]]) -> None:
        """Flush and refresh in the background; `teams` says whose advice to refresh."""
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(teams))

    async def close(self) -> None:
        """Stop, writing what was counted since the last flush. Every wait is bounded: a
        Redis call cancelled mid-connect can swallow the cancellation, and a shutdown
        must not hang on it (the loop also ends at its next turn)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=_CLOSE_WAIT_S)
            self._task = None
        last = asyncio.ensure_future(self.flush())
        done, _ = await asyncio.wait({last}, timeout=_CLOSE_FLUSH_S)
        if not done:
            last.cancel()

    async def _run(self, teams: Callable[[], Iterable[str]]) -> None:
        next_refresh = 0.0
        while not self._closing:
            try:
                await self.flush()
                now = time.monotonic()
                if now >= next_refresh:
                    next_refresh = now + self.settings.refresh_s
                    await self.refresh(teams())
            except StoreUnavailable as exc:
                self._warn(error=str(exc)[:200], effect="advice and depths not refreshed")
            except Exception as exc:  # a background task: report, keep counting
                log.error("depth_refresh_failed", error=exc.__class__.__name__)
            await asyncio.sleep(self.settings.flush_s)

    async def flush(self) -> None:
        """Fold every tally into this bucket's counters and add them to the store;
        what the store cannot take now is kept (bounded) for the next flush."""
        async with self._flushing:
            now = self.clock()
            bucket = int(now // self.settings.bucket_s)
            for (team, model), tally in self._tallies.items():
                if tally.records or tally.sizes:
                    self._pending.setdefault((team, model, bucket), Counter()).update(tally.take())
            self._forget_old(bucket)
            for key in list(self._pending):
                team, model, when = key
                try:
                    await self.store.add(team, model, when, self._pending[key], now)
                except StoreUnavailable as exc:
                    self._warn(error=str(exc)[:200], effect="depth counts kept for later")
                    return
                del self._pending[key]

    def _forget_old(self, bucket: int) -> None:
        oldest = bucket - self._window_buckets() + 1
        stale = [key for key in self._pending if key[2] < oldest]
        stale += list(self._pending)[: max(0, len(self._pending) - MAX_PENDING)]
        for key in stale:
            self._pending.pop(key, None)

    def _window_buckets(self) -> int:
        return max(1, round(self.settings.window_s / self.settings.bucket_s))

    # ----------------------------------------------------------------- reading

    async def rows(self, teams: Iterable[str]) -> list[Row]:
        """The advice of every model these teams have counts for, from the store's window."""
        now = self.clock()
        last = int(now // self.settings.bucket_s)
        buckets = list(range(last - self._window_buckets() + 1, last + 1))
        local: dict[str, set[str]] = {}
        for team, model in self._tallies:
            local.setdefault(team, set()).add(model)
        rows = []
        for team in sorted(set(teams)):
            models = await self.store.models(team) | local.get(team, set())
            for model in sorted(models):
                counts, first = await self.store.read(team, model, buckets)
                if not counts.get("r"):
                    continue
                span = now - first if first is not None else 0.0
                window = Window.of(counts, span)
                rule = self.rule(team)
                advice = advise(window, rule, self.settings, self.costs.get(model))
                rows.append(Row(team, model, rule, window, advice))
        return rows

    async def refresh(self, teams: Iterable[str]) -> list[Row]:
        """Read the advice; set the gauges and the depths of teams in enforce mode."""
        rows = await self.rows(teams)
        for row in rows:
            if row.rule.mode == ENFORCE:
                await self._decide(row)
            self._gauges(row)
        return rows

    async def report(self, teams: Iterable[str], *, flush: bool = False) -> dict[str, Any]:
        """The advice as plain data (GET /admin/depth, the status page, the CLI).
        `flush`: add this process's counts to the store first, and refresh."""
        if flush:
            await self.flush()
            rows = await self.refresh(teams)
        else:
            rows = await self.rows(teams)
        return {
            "scope": self.scope,
            "window_hours": self.settings.window_hours,
            "rows": [self.describe(row) for row in rows],
        }

    def describe(self, row: Row) -> dict[str, Any]:
        key = (row.team, row.model)
        enforcer = self._enforcers.get(key)
        return {
            "team": row.team,
            "model": row.model,
            "mode": row.rule.mode,
            "enforced": enforcer.depth if enforcer is not None else None,
            "reverted": key in self._reverted,
            **row.advice.as_dict(),
        }

    def teams_seen(self) -> set[str]:
        """The teams this process has measured (with auth off: `anonymous`)."""
        return {team for team, _ in self._tallies}

    # ----------------------------------------------------------------- enforcement

    async def _decide(self, row: Row) -> None:
        """Cut this team and model to the advised depth, keep it, or switch back to advise."""
        key = (row.team, row.model)
        if await self.store.reverted(row.team, row.model):
            self._reverted.add(key)
            self._enforcers.pop(key, None)
            return
        self._reverted.discard(key)
        current = self._enforcers.get(key)
        if current is not None:
            minimum = max(1, self.settings.min_requests // 5)
            recall = drifted(row.window, current.depth, row.rule, self._z, minimum)
            if recall is not None:
                await self._revert(row, current.depth, recall)
                return
        advice = row.advice
        depth = advice.needs if advice.status == ADVICE and advice.cuts else None
        if depth is None:
            if self._enforcers.pop(key, None) is not None:
                log.info(
                    "depth_enforcement_paused", team=row.team, model=row.model, reason=advice.status
                )
            return
        if current is None or current.depth != depth:
            self._enforcers[key] = Enforcer(
                row.team, row.model, depth, row.rule.explore_share, self.rng
            )
            log.info(
                "depth_enforced",
                team=row.team,
                model=row.model,
                depth=depth,
                before=current.depth if current is not None else None,
            )

    async def _revert(self, row: Row, depth: int, recall: float) -> None:
        key = (row.team, row.model)
        self._enforcers.pop(key, None)
        self._reverted.add(key)
        # One replica wins the mark and tells the operator; the others follow it.
        if await self.store.revert(row.team, row.model, self.settings.window_s):
            self.events.emit(
                events.DEPTH_REVERTED,
                team=row.team,
                model=row.model,
                depth=depth,
                explored_recall=round(recall, 4),
                target_recall=row.rule.target,
                explored_requests=row.window.explored,
                for_hours=self.settings.window_hours,
            )

    # ----------------------------------------------------------------- gauges

    def _gauges(self, row: Row) -> None:
        if row.team not in self.labelled or row.model not in self.costs:
            return
        labels = (row.team, row.model)
        advice = row.advice
        if advice.status == ADVICE and advice.needs is not None:
            self.metrics.depth_needed.labels(*labels).set(advice.needs)
        else:
            with contextlib.suppress(KeyError):
                self.metrics.depth_needed.remove(*labels)
        if advice.sends_mean is not None:
            self.metrics.depth_sent.labels(*labels).set(advice.sends_mean)
        if row.rule.mode == ENFORCE:
            enforcer = self._enforcers.get(labels)
            self.metrics.depth_enforced.labels(*labels).set(
                enforcer.depth if enforcer is not None else 0
            )


def build_depth(
    config: Config,
    catalog: Catalog,
    routing: DeploymentState,
    prices: PriceTable,
    metrics: Metrics,
    redis: redis_client.Client | None,
    *,
    labelled_teams: Collection[str],
    clock: Clock = time.time,
) -> DepthBook:
    settings = config.depth
    store: DepthStore
    if redis is not None:
        prefix = settings.redis_prefix or config.limits.redis_prefix
        store = RedisDepthStore(redis, prefix, settings.window_s)
    else:
        buckets = max(1, round(settings.window_s / settings.bucket_s))
        store = MemoryDepthStore(buckets, clock)
    rules = {name: Rule.of(settings, team.depth) for name, team in config.teams.items()}
    billing = config.pricing.rules()
    costs = {
        model: Costing(prices.price(served, None), billing, _latency(routing, served))
        for model in [*catalog.deployments, *catalog.tiers]
        if (served := _served_by(catalog, model)) is not None
    }
    return DepthBook(
        settings,
        rules,
        store,
        costs,
        metrics,
        billing,
        labelled_teams=labelled_teams,
        clock=clock,
    )


def _served_by(catalog: Catalog, model: str) -> str | None:
    """The concrete model whose price and latency stand for `model` (an alias: its pro
    tier, the one a cut would be priced at without a downgrade)."""
    if model in catalog.deployments:
        return model
    tiers = catalog.tiers.get(model, {})
    return tiers.get("pro") or next(iter(tiers.values()), None)


def _latency(
    routing: DeploymentState, model: str
) -> Callable[[int, int, float, float], float | None] | None:
    """How much a call's p90 falls from `now` to `to` documents, on the model's first
    deployment: the latency model's p90 for today's size, scaled by how the deployment's
    latency prior (base + per document + per 1,000 characters) falls between the sizes.
    The observed figure anchors it; the prior only gives the shape, since calls of the
    advised size are rarely seen before a team sends them."""
    routed = routing.models.get(model)
    if routed is None or not routed.deployments:
        return None
    first = min(routed.deployments, key=lambda d: d.priority)
    latency = routing.health[first.name].latency

    def saved(now: int, to: int, chars_per_doc: float, query_chars: float) -> float | None:
        chars_now = int(now * chars_per_doc + query_chars)
        chars_to = int(to * chars_per_doc + query_chars)
        prior_now = latency.prior.predict_s(now, chars_now)
        if prior_now <= 0:
            return None
        observed = latency.estimate(now, chars_now, TIER_QUANTILE).seconds
        share = 1.0 - latency.prior.predict_s(to, chars_to) / prior_now
        return max(0.0, observed * share)

    return saved
