"""The scoring chain: how the documents of one request get their scores.

A `Scorer` takes a `ScoreJob` (a query and the documents that still need scores)
and returns one score per document. Layers wrap one another, each with one job;
the innermost is the `Router`, which calls the model's deployments:

    [cache] -> [coalescing] -> [limits and budget] -> Router -> provider

A layer that answers some documents itself (the cache) passes only the rest inward,
so `search_units` always counts what really went upstream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.errors import ApiError, from_provider_error
from gateway.logs import log
from gateway.metrics import Metrics
from policies.billing import DEFAULT_RULES, BillingRules
from policies.routing import attempt_order
from providers.types import AUTH, Deployment, ProviderError, UpstreamCall


@dataclass(slots=True)
class RequestContext:
    """What the layers know about the request, and what they report back."""

    request_id: str
    team: str
    model: str  # the concrete gateway model being served
    deadline: float  # time.monotonic() by which the answer must be ready
    warnings: list[str] = field(default_factory=list)
    cache_control: frozenset[str] = frozenset()
    alias: str | None = None  # the tiered alias the caller named, if any
    # Filled in by the layers:
    deployment: str | None = None  # what served the upstream part, if any
    upstream_s: float = 0.0
    attempts: int = 0
    cache_status: str | None = None

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class ScoreJob:
    ctx: RequestContext
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None = None

    def subset(self, documents: Sequence[str]) -> ScoreJob:
        return replace(self, documents=documents)


@dataclass(frozen=True, slots=True)
class Scored:
    scores: list[float]  # aligned with ScoreJob.documents
    search_units: int  # billed for this job's upstream calls; 0 when none was made


class Scorer(Protocol):
    async def score(self, job: ScoreJob) -> Scored: ...


class Router:
    """Tries a model's deployments in policy order until one answers within the deadline.

    Retryable failures (connection, timeout, 429, 5xx) move on to the next deployment;
    the caller's mistakes end the request at once.
    """

    def __init__(
        self,
        deployments: dict[str, list[Deployment]],
        metrics: Metrics,
        rng: random.Random | None = None,
        billing: BillingRules = DEFAULT_RULES,
    ) -> None:
        self.deployments = deployments
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.billing = billing  # estimates units for upstreams that do not report them

    async def score(self, job: ScoreJob) -> Scored:
        ctx = job.ctx
        last: ProviderError | None = None
        last_deployment = ""
        for deployment in attempt_order(self.deployments[ctx.model], self.rng):
            remaining = ctx.remaining_s()
            if remaining <= 0:
                break
            try:
                return await self._attempt(deployment, job, remaining)
            except ProviderError as exc:
                last, last_deployment = exc, deployment.name
                if not exc.retryable:
                    break
        if last is None:
            raise ApiError(
                504, f"model {ctx.model!r}: the request deadline passed before any attempt"
            )
        raise from_provider_error(ctx.model, last, ctx.attempts, deployment=last_deployment)

    async def _attempt(self, deployment: Deployment, job: ScoreJob, timeout_s: float) -> Scored:
        ctx = job.ctx
        ctx.attempts += 1
        call = UpstreamCall(
            model=deployment.model,
            query=job.query,
            documents=job.documents,
            timeout_s=timeout_s,
            max_tokens_per_doc=job.max_tokens_per_doc,
            request_id=ctx.request_id,
        )
        started = time.perf_counter()
        try:
            result = await deployment.provider.rerank(call)
        except ProviderError as exc:
            self.metrics.upstream_errors.labels(deployment.name, exc.kind).inc()
            _log_failure(deployment, exc, ctx.request_id)
            raise
        finally:
            elapsed = time.perf_counter() - started
            ctx.upstream_s += elapsed
            self.metrics.upstream_duration.labels(deployment.name).observe(elapsed)
        ctx.deployment = deployment.name
        units = result.search_units
        if units is None:
            units = self.billing.estimate(job.query, job.documents, job.max_tokens_per_doc)
        return Scored(result.scores, units)


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
        log.warning("upstream_auth_failed", **fields)
    else:
        log.info("upstream_error", retryable=exc.retryable, **fields)
