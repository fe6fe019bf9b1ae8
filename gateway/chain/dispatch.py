"""Dispatch, the innermost scorer: call the model's deployments through the failover policy.

The policy (`policies.routing.failover`) decides order, retries, hedges and breakers; this
module builds the upstream call, records per-call metrics, and turns a failure into
what the caller sees: the caller's own mistake as such, anything else as
`UpstreamUnavailable` (which a model's `fallback` may answer instead).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import replace
from functools import partial

from gateway.chain.job import Scored, ScoreJob
from gateway.errors import (
    SCRUB_PATTERNS,
    ApiError,
    Scrubber,
    UpstreamUnavailable,
    from_provider_error,
    outage,
    spans_unsupported,
)
from gateway.observe import tracing
from gateway.observe.events import CREDENTIALS_REFUSED
from gateway.observe.logs import log
from gateway.observe.metrics import Metrics, child
from gateway.state.deployments import DeploymentState
from policies.money.billing import DEFAULT_RULES, BillingRules
from policies.routing.attempt_order import attempt_order
from policies.routing.failover import (
    BREAKER_OPEN,
    BULKHEAD_FULL,
    Exhausted,
    FailoverPlan,
    FailoverReport,
)
from providers.types import (
    AUTH,
    Deployment,
    ProviderError,
    UpstreamCall,
    UpstreamMeta,
    UpstreamResult,
)

# Statuses that mean "the deployments could not answer", not "the request is wrong".
_UNAVAILABLE = frozenset({429, 502, 503, 504})


class Dispatch:
    def __init__(
        self,
        deployments: DeploymentState,
        metrics: Metrics,
        rng: random.Random | None = None,
        billing: BillingRules = DEFAULT_RULES,
        scrub: Scrubber = SCRUB_PATTERNS,
    ) -> None:
        self.deployments = deployments
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.billing = billing  # estimates units for upstreams that do not report them
        self.scrub = scrub  # what of an upstream's message the caller may read
        # What each deployment's last answer said beside its scores: a replay says the same.
        self._last_meta: dict[str, UpstreamMeta | None] = {}

    async def score(self, job: ScoreJob) -> Scored:
        facts, report = job.facts, job.report
        model = self.deployments.models[facts.model]
        docs, chars = len(job.documents), len(job.query) + sum(map(len, job.documents))
        deployments = model.deployments
        if job.spans is not None:  # only deployments that can return them are tried
            deployments = [d for d in deployments if d.relevant_spans]
            if not deployments:
                raise spans_unsupported(facts.model)
        order = attempt_order(deployments, self.rng, self.deployments.usable)
        if job.replay is not None and self.deployments.usable(order[0]):
            return await self._replay(job, order[0], docs, chars)
        plan = FailoverPlan(
            deployments=order,
            deadline=facts.deadline,
            docs=docs,
            chars=chars,
            max_attempts=model.max_attempts,
            hedge_delay_s=self.deployments.hedge_delay_s(model, order[0], docs, chars),
            max_hedges=model.hedge.max_hedges,
        )
        failover = FailoverReport()
        started = time.monotonic()
        try:
            deployment, result = await self.deployments.failover.run(
                plan, partial(self._call, job), failover
            )
        except Exhausted as exc:
            raise _unavailable(facts.model, exc, self.scrub) from None
        except ProviderError as exc:
            raise _mapped(facts.model, exc, failover, self.scrub) from None
        finally:
            report.attempts += failover.attempts
            report.upstream_s += max(0.0, time.monotonic() - started - failover.waited_s)
            self._record(facts.model, failover)
        report.deployment = deployment.name
        meta = _meta(result)
        report.note_upstream(meta)
        self._last_meta[deployment.name] = meta
        # The upstream's own figures settle the reservation; where it gives none, the same
        # estimate the reservation made stands in.
        units = result.search_units
        if units is None:
            units = self.billing.estimate(job.query, job.documents, job.max_tokens_per_doc)
        tokens = result.tokens
        if tokens is None:
            tokens = self.billing.estimate_tokens(job.query, job.documents, job.max_tokens_per_doc)
        return Scored(result.scores, units, tokens, 1, spans=result.spans)

    async def _replay(self, job: ScoreJob, first: Deployment, docs: int, chars: int) -> Scored:
        """Known scores, answered as the call they stand for: from the deployment that
        would have been called first, after its typical latency for a call of this size
        (at most half of what is left of the deadline), billed the estimate, with the
        `meta` its last answer had (its token count the estimate). Nothing is recorded as
        a call (no latency observation, breaker outcome or upstream metric). When that
        deployment cannot be called (its breaker is open), `score` calls for real
        instead, so the job fails or fails over as a call would."""
        delay = max(
            0.0, min(self.deployments.typical_s(first, docs, chars), job.facts.remaining_s() / 2)
        )
        await asyncio.sleep(delay)
        query, documents, limit = job.query, job.documents, job.max_tokens_per_doc
        tokens = self.billing.estimate_tokens(query, documents, limit)
        report = job.report
        report.deployment = first.name
        report.attempts += 1
        report.upstream_s += delay
        last = self._last_meta.get(first.name)
        if last is not None:
            counted = tokens if last.input_tokens is not None else None
            report.note_upstream(
                UpstreamMeta(last.is_deprecated, last.is_experimental, (), counted, None)
            )
        assert job.replay is not None
        return Scored(list(job.replay), self.billing.estimate(query, documents, limit), tokens, 1)

    async def _call(
        self, job: ScoreJob, deployment: Deployment, timeout_s: float
    ) -> UpstreamResult:
        call = UpstreamCall(
            model=deployment.model,
            query=job.query,
            documents=job.documents,
            timeout_s=timeout_s,
            max_tokens_per_doc=job.max_tokens_per_doc,
            request_id=job.facts.request_id,
            priority=job.priority,
            relevant_spans=job.spans,
            listwise=self.deployments.models[job.facts.model].listwise,
        )
        started = time.perf_counter()
        with tracing.attempt(deployment, call) as traced:  # the attempt's CLIENT span
            try:
                result = await deployment.provider.rerank(traced.stamp(call))
            except ProviderError as exc:
                self.metrics.upstream_errors.labels(deployment.name, exc.kind).inc()
                if exc.kind == AUTH:  # logged as upstream_auth_failed, with the status and code
                    self.metrics.credentials_refused.labels(deployment.name).inc()
                    self.metrics.operator_events.labels(CREDENTIALS_REFUSED).inc()
                self._observe(deployment, started)
                _log_failure(deployment, exc, job.facts.request_id)
                raise
            traced.answered(result, deployment.model)
        self._observe(deployment, started)
        return result

    def _observe(self, deployment: Deployment, started: float) -> None:
        elapsed = time.perf_counter() - started
        child(self.metrics.upstream_duration, deployment.name).observe(elapsed)

    def _record(self, model: str, report: FailoverReport) -> None:
        for outcome in report.hedges:
            self.metrics.hedges.labels(model, outcome).inc()
        for name, reason in report.skipped.items():
            self.metrics.deployment_skips.labels(name, reason).inc()
        if report.budget_exhausted:
            self.metrics.retry_budget_exhausted.labels(model).inc()


def _meta(result: UpstreamResult) -> UpstreamMeta | None:
    """What the answer said beside its scores; the tokens it reported count as its input
    tokens when its meta gives none (usage fields, TEI's header)."""
    meta = result.meta
    if result.tokens is None or (meta is not None and meta.input_tokens is not None):
        return meta
    return UpstreamMeta(input_tokens=result.tokens) if meta is None else (
        replace(meta, input_tokens=result.tokens)
    )


def _mapped(
    model: str, error: ProviderError, report: FailoverReport, scrub: Scrubber
) -> ApiError:
    """The caller's view of the last failure, with what the router skipped and why."""
    mapped = from_provider_error(
        model, error, report.attempts, deployment=report.last_failed, scrub=scrub
    )
    if mapped.status not in _UNAVAILABLE:
        return mapped
    notes = []
    passed_over = [name for name, why in report.skipped.items() if why == BREAKER_OPEN]
    if passed_over:
        notes.append(f"not tried, circuit open: {', '.join(passed_over)}")
    if report.budget_exhausted:
        notes.append("not retried: the gateway's retry budget is spent (too many failures)")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return UpstreamUnavailable(
        mapped.status,
        mapped.message + suffix,
        retry_after_s=mapped.retry_after_s,
        retry_after_ms=mapped.retry_after_ms,
        log_message=mapped.log_message + suffix,
    )


def _unavailable(model: str, exc: Exhausted, scrub: Scrubber) -> ApiError:
    report = exc.report
    if exc.last is not None:
        return _mapped(model, exc.last, report, scrub)
    reasons = set(report.skipped.values())
    names = ", ".join(report.skipped)
    if BREAKER_OPEN in reasons:
        # The breakers' own timing is in the message and the log line, not in Retry-After:
        # an SDK would sleep that long (see gateway.errors.outage).
        wait = math.ceil(report.breaker_wait_s or 0.0)
        return outage(
            f"model {model!r} is unavailable: every deployment's circuit breaker is open after "
            f"repeated failures ({names}); the first is probed again in {wait} s"
        )
    if BULKHEAD_FULL in reasons:
        return outage(
            f"model {model!r} is unavailable: every deployment is at its max_in_flight limit "
            f"({names}); retry shortly"
        )
    return UpstreamUnavailable(
        504, f"model {model!r}: the request deadline passed before any attempt"
    )


def _log_failure(deployment: Deployment, exc: ProviderError, request_id: str) -> None:
    """One line per failed attempt, with the upstream's request id for its support desk.

    Refused credentials are a configuration problem, so they are a warning. Never the
    message itself: it is the upstream's text, and nothing here may carry credentials.
    """
    fields = {
        "deployment": deployment.name,
        "request_id": request_id,
        "kind": exc.kind,
        "status": exc.status,
        "code": exc.code,
        "upstream_request_id": exc.upstream_request_id,
    }
    if exc.kind == AUTH:
        log.warning("upstream_auth_failed", operator_event=True, **fields)
    else:
        log.info("upstream_error", retryable=exc.retryable, **fields)
