"""Budget alerts: tell operators when a team crosses a share of its daily or monthly budget.

Checked after a request's cost is settled, in a background task, so a request never
waits for it: read what each budget window has charged (the same counters the budget
enforces, shared by replicas when limits live in Redis), and for every configured
threshold (`alerts.thresholds`, default 80% and 100%; a team may have its own) that the
spend has reached, emit the `budget_threshold_crossed` event and metric and queue the
webhook, once per team, budget, threshold and period. With Redis the "once" holds across
replicas and workers (`SET NX` on a key that expires with the period); otherwise per
process.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from gateway.config import Config
from gateway.observe.events import BUDGET_THRESHOLD, Events, Webhook
from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics
from gateway.state import redis_client
from policies.money.budget import Window, usd
from policies.money.quota import QuotaRequest, QuotaStore, StoreUnavailable
from policies.money.redis_quota import team_key

_CLAIM_MARGIN_S = 86_400


class BudgetAlerts:
    def __init__(
        self, config: Config, metrics: Metrics, redis: redis_client.Client | None = None
    ) -> None:
        self.metrics = metrics
        self.events = Events(metrics)
        self.redis = redis if config.limits.limits_backend == "redis" else None
        self.prefix = config.limits.redis_prefix
        self.thresholds: dict[str, list[float]] = {}
        self.webhooks: dict[str, Webhook] = {}
        self._team_webhook: dict[str, Webhook] = {}
        for team, team_config in config.teams.items():
            if team_config.budget is None:
                continue
            alerts = team_config.alerts or config.alerts
            self.thresholds[team] = alerts.thresholds
            if alerts.webhook_url:
                hook = self.webhooks.get(alerts.webhook_url)
                if hook is None:
                    hook = self.webhooks[alerts.webhook_url] = Webhook(
                        alerts.webhook_url,
                        metrics,
                        timeout_s=alerts.webhook_timeout_s,
                        attempts=alerts.webhook_attempts,
                    )
                self._team_webhook[team] = hook
        # (team, budget) -> (period, thresholds already claimed in it)
        self._claimed: dict[tuple[str, str], tuple[str, set[float]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warn = ThrottledWarning("budget_alert_check_failed")

    def settled(self, store: QuotaStore, request: QuotaRequest) -> None:
        """After a settle: check the team's budgets in the background (returns at once)."""
        thresholds = self.thresholds.get(request.team)
        if not thresholds or not request.windows or self._all_claimed(request, thresholds):
            return
        task = asyncio.get_running_loop().create_task(self._check(store, request, thresholds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _all_claimed(self, request: QuotaRequest, thresholds: list[float]) -> bool:
        for window in request.windows:
            period, claimed = self._claimed.get((request.team, window.name), ("", set()))
            if period != window.period or len(claimed) < len(thresholds):
                return False
        return True

    async def _check(
        self, store: QuotaStore, request: QuotaRequest, thresholds: list[float]
    ) -> None:
        try:
            spent = await store.spent(request.team, request.windows)
        except StoreUnavailable as exc:
            self._warn(team=request.team, error=str(exc)[:200])
            return
        for window in request.windows:
            used = spent.get(window.name, 0)
            share = used / window.limit_micros if window.limit_micros else math.inf
            for threshold in thresholds:
                if share >= threshold and await self._claim(request, window, threshold):
                    self._alert(request, window, threshold, used)

    async def _claim(self, request: QuotaRequest, window: Window, threshold: float) -> bool:
        """True for the first to see this threshold crossed in this period."""
        key = (request.team, window.name)
        period, claimed = self._claimed.get(key, ("", set()))
        if period != window.period:
            period, claimed = window.period, set()
            self._claimed[key] = (period, claimed)
        if threshold in claimed:
            return False
        claimed.add(threshold)
        if self.redis is None:
            return True
        name = team_key(self.prefix, request.team, f"alert:{window.period}:{threshold:g}")
        ttl = max(1, math.ceil(window.resets_at - request.now) + _CLAIM_MARGIN_S)
        try:
            return bool(await self.redis.set(name, b"1", nx=True, ex=ttl))
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(team=request.team, error=exc.__class__.__name__)
            return True  # better a duplicate alert than a missed one

    def _alert(self, request: QuotaRequest, window: Window, threshold: float, used: int) -> None:
        alert: dict[str, Any] = {
            "type": BUDGET_THRESHOLD,
            "team": request.team,
            "budget": window.name,
            "period": window.period,
            "threshold": threshold,
            "spent_usd": round(usd(used), 6),
            "limit_usd": round(usd(window.limit_micros), 6),
            "resets_at": datetime.fromtimestamp(window.resets_at, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
        self.metrics.budget_alerts.labels(request.team, window.name, f"{threshold:g}").inc()
        self.events.emit(BUDGET_THRESHOLD, **{k: v for k, v in alert.items() if k != "type"})
        hook = self._team_webhook.get(request.team)
        if hook is not None:
            hook.send(alert)

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        for hook in self.webhooks.values():
            await hook.close()
