"""The fail-open answer when none of a model's deployments can answer
(`UpstreamUnavailable`): the team's `fallback` if it has one, else the model's.

- `error` (the default): the error stands (503 with Retry-After, or 429/502/504).
- `passthrough`: the caller's documents in their original order, scores 1 - i/n.
- `local`: ranked by the offline BM25 ranker.
Either way the answer is flagged in `meta.warnings`, billed 0 search units, and served
with `X-Rerank-Deployment: fallback/<mode>` (and the score scale that says so). Relevant
spans asked for are not returned, and the warning says that too. The outermost layer, so
a degraded answer is never cached.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.chain.job import Report, Scored, ScoreJob, Scorer
from gateway.errors import UpstreamUnavailable
from gateway.observe import events, tracing
from gateway.observe.metrics import Metrics
from providers.local import LocalOptions, LocalProvider
from providers.types import UpstreamCall

ERROR, PASSTHROUGH, LOCAL = "error", "passthrough", "local"
DEPLOYMENT_PREFIX = "fallback/"  # the report's deployment when a fallback answered
_WHAT = {
    PASSTHROUGH: "the documents are returned in their original order with placeholder scores",
    LOCAL: "the documents were ranked by the gateway's offline BM25 ranker instead",
}


def degraded(report: Report) -> bool:
    """True when a fallback answered (its scores are not the model's verdict)."""
    return (report.deployment or "").startswith(DEPLOYMENT_PREFIX)


class Fallback:
    def __init__(
        self,
        inner: Scorer,
        modes: Mapping[str, str],
        metrics: Metrics,
        team_modes: Mapping[str, str] | None = None,
    ) -> None:
        self.inner = inner
        self.modes = modes
        self.team_modes = team_modes or {}
        self.metrics = metrics
        self.local = LocalProvider("fallback", LocalOptions())
        self.events = events.Events(metrics)

    async def score(self, job: ScoreJob) -> Scored:
        try:
            return await self.inner.score(job)
        except UpstreamUnavailable as exc:
            facts = job.facts
            mode = self.team_modes.get(facts.team) or self.modes.get(facts.model, ERROR)
            if mode == ERROR:
                raise
            if mode == PASSTHROUGH:
                n = len(job.documents)
                scores = [1.0 - i / n for i in range(n)]
            else:
                call = UpstreamCall("bm25", job.query, job.documents, timeout_s=facts.remaining_s())
                scores = (await self.local.rerank(call)).scores
            job.report.deployment = f"{DEPLOYMENT_PREFIX}{mode}"
            spans = "; no relevant_spans" if job.spans is not None else ""
            job.report.warnings.append(
                f"{exc.message}; {_WHAT[mode]} (fallback: {mode}){spans}"
            )
            self.metrics.fallbacks.labels(facts.model, mode).inc()
            tracing.event("fallback", model=facts.model, mode=mode)
            self.events.repeating(events.FALLBACK, facts.model, model=facts.model, mode=mode)
            return Scored(scores, 0)
