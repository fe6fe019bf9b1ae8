"""Over-fetch limits at run time: the pipeline's step between parsing and scoring.

The decision is `policies.money.limits` (max documents, query and document sizes, body bytes,
per team and model); this applies it to one request, answers 400/413 in Cohere's shape,
and counts every enforcement in `rerank_overfetch_total` and in the usage report
(`rejected_limits`, `truncated`).
"""

from __future__ import annotations

from gateway.errors import bad_request
from gateway.observe.metrics import Metrics
from gateway.state.usage import Payer, UsageRecorder
from policies.money.limits import Enforced, LimitExceeded, LimitPolicy
from policies.money.usage_events import REJECTED_LIMITS_KIND, TRUNCATED_KIND

UNPARSED_MODEL = "unknown"  # the model of a request refused before its body was read


class Overfetch:
    def __init__(self, limits: LimitPolicy, usage: UsageRecorder, metrics: Metrics) -> None:
        self.limits = limits
        self.usage = usage
        self.metrics = metrics

    def body_limit(self, team: str) -> int:
        return self.limits.body_limit(team)

    async def body_rejected(self, payer: Payer) -> None:
        """A 413 for max_body_bytes: counted like every other enforcement, in the metric
        and in the usage report's rejected_limits (the model is not known: unparsed)."""
        self.metrics.overfetch.labels(payer.team, "max_body_bytes", "reject").inc()
        await self.usage.counted(payer, UNPARSED_MODEL, REJECTED_LIMITS_KIND)

    async def apply(
        self, payer: Payer, model: str, query: str, texts: list[str]
    ) -> Enforced | None:
        """Over-fetch limits of (team, model): raise 400, or what to truncate (None: nothing)."""
        team = payer.team
        try:
            enforced = self.limits.enforce(team, model, query, texts)
        except LimitExceeded as exc:
            self.metrics.overfetch.labels(team, exc.limit, "reject").inc()
            await self.usage.counted(payer, model, REJECTED_LIMITS_KIND)
            raise bad_request(exc.message) from None
        if not enforced.applied:
            return None
        for applied in enforced.applied:
            self.metrics.overfetch.labels(team, applied.limit, applied.action).inc()
        await self.usage.counted(payer, model, TRUNCATED_KIND)
        return enforced
