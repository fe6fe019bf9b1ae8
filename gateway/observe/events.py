"""Operator events: the few things a platform team must hear about without a dashboard.

Each event is one JSON log line (`event` names it, with the deployment or team and the
reason) and one increment of `rerank_operator_events_total{event}`; some also have a
metric of their own with more labels. Events that repeat on every request while they
last (a fallback answering during an outage) are logged at most once per interval, with
a count, like `ThrottledWarning`.

`Webhook` delivers budget alerts to an HTTP endpoint from a background task: a request
only puts the alert in a bounded queue, so a slow or dead receiver never delays one.
Each alert is retried with exponential back-off, then given up (logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.observe.logs import log
from gateway.observe.metrics import Metrics

BREAKER_OPENED = "breaker_opened"
BREAKER_HALF_OPEN = "breaker_half_open"
BREAKER_CLOSED = "breaker_closed"
CREDENTIALS_REFUSED = "credentials_refused"
BUDGET_THRESHOLD = "budget_threshold_crossed"
TIER_DOWNGRADE = "tier_downgraded"  # a team's budget is used up: served by the fast tier
TIER_BACKUP = "tier_backup_started"  # pro ran late: the fast tier raced it
TIER_NONE_FIT = "tier_none_fit"  # no tier is predicted to fit the latency budget
FALLBACK = "fallback_engaged"  # every deployment failed: the model's fallback answered
LEDGER_UNREACHABLE = "ledger_unreachable"  # usage events are held in memory meanwhile
LEDGER_BUFFER_FULL = "ledger_buffer_full"  # events are being dropped (counted)
LEDGER_SCHEMA = "ledger_schema_mismatch"  # the ledger's schema is not this gateway's
BUDGET_REBUILT = "budget_rebuilt"  # a team's budget counter was seeded from the ledger
BUDGETS_FORGOTTEN = "budget_counters_forgotten"  # Redis failed over or restarted: rebuild
# A team's depth enforcement switched back to advise: the explored sample's recall at the
# enforced depth fell below the target (docs/depth.md).
DEPTH_REVERTED = "depth_enforcement_reverted"

_REPEAT_INTERVAL_S = 30.0


class Events:
    """Logs and counts operator events; repeating ones at most once per interval and key."""

    def __init__(
        self,
        metrics: Metrics,
        interval_s: float = _REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self._quiet_until: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], int] = {}

    def emit(self, event: str, level: str = "warning", **fields: Any) -> None:
        self.metrics.operator_events.labels(event).inc()
        getattr(log, level)(event, operator_event=True, **fields)

    def repeating(self, event: str, key: str, **fields: Any) -> None:
        """An event that may happen on every request: counted each time, logged once per
        interval per `key` (a model or alias), with how many happened since."""
        self.metrics.operator_events.labels(event).inc()
        slot = (event, key)
        self._unlogged[slot] = self._unlogged.get(slot, 0) + 1
        now = self.clock()
        if now < self._quiet_until.get(slot, float("-inf")):
            return
        log.warning(event, operator_event=True, occurrences=self._unlogged[slot], **fields)
        self._unlogged[slot] = 0
        self._quiet_until[slot] = now + self.interval_s


class Webhook:
    """POSTs JSON alerts to one URL from a background task, with retries and back-off."""

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        first_backoff_s: float = 0.5,
        max_queue: int = 1000,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.first_backoff_s = first_backoff_s
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    def send(self, alert: dict[str, Any]) -> None:
        """Queue an alert; returns at once (drops it, counted, if the queue is full)."""
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.metrics.alert_webhooks.labels("dropped").inc()
            log.warning("alert_webhook_dropped", reason="queue full", **_describe(alert))
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._deliver_all())

    async def _deliver_all(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._queue.empty():
                alert = self._queue.get_nowait()
                await self._deliver(session, alert)

    async def _deliver(self, session: aiohttp.ClientSession, alert: dict[str, Any]) -> None:
        delay = self.first_backoff_s
        for attempt in range(1, self.attempts + 1):
            failure: str
            try:
                async with session.post(self.url, json=alert, allow_redirects=False) as resp:
                    if resp.status < 300:
                        self.metrics.alert_webhooks.labels("sent").inc()
                        return
                    failure = f"status {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failure = exc.__class__.__name__
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.metrics.alert_webhooks.labels("failed").inc()
        log.warning(
            "alert_webhook_failed", attempts=self.attempts, error=failure, **_describe(alert)
        )

    async def close(self) -> None:
        """Give queued alerts a moment to go out, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), self.timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _describe(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: alert.get(k) for k in ("team", "budget", "threshold", "period")}
