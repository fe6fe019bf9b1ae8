"""Types shared by providers, policies and the gateway.

This is the one module that both `providers` and `policies` may import; it holds
only plain data and the provider contract, no behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# What a deployment's scores mean (a known fact per provider and model; see
# providers/facts.py). Scores of two scales are never comparable.
CALIBRATED = "calibrated"  # 0..1, normalised by the provider for thresholding (Cohere)
SIGMOID = "sigmoid"  # 0..1, the sigmoid of a cross-encoder's logit (TEI, NIM's default)
LOGIT = "logit"  # the raw, unbounded logit (NIM with `score: logit`)
BM25 = "bm25"  # the offline lexical ranker: 0..1, relative to the documents of the call
PLACEHOLDER = "placeholder"  # no model scored: 1 - i/n in the caller's order (fallback)
SCORE_SCALES = (CALIBRATED, SIGMOID, LOGIT, BM25, PLACEHOLDER)


@dataclass(frozen=True, slots=True)
class SpanOptions:
    """Rerank 5's `relevant_spans` (mode enabled): which spans of each document to return."""

    threshold: float | None = None  # only spans scoring above it; the upstream's default 0.1
    max_spans: int | None = None  # per document; None: all


@dataclass(frozen=True, slots=True)
class Span:
    """A relevant stretch of a document: code points `[start, end)`, score in 0..1."""

    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class UpstreamMeta:
    """What an upstream said about its answer beside the scores (Cohere's `meta`)."""

    is_deprecated: bool | None = None
    is_experimental: bool | None = None
    warnings: tuple[str, ...] = ()
    input_tokens: int | None = None  # `meta.tokens`, as the upstream reported them
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One scoring call to one deployment: score every document against the query.

    The gateway always asks for the scores of all documents it sends (no top_n
    upstream): billing does not depend on top_n and the cache needs every score.
    """

    model: str  # the upstream model id (deployment's `model`)
    query: str
    documents: Sequence[str]
    timeout_s: float  # what is left of the request's deadline for this attempt
    max_tokens_per_doc: int | None = None
    request_id: str = ""
    # W3C trace context of this attempt (`traceparent`, `tracestate`), sent as headers so
    # the upstream's span is a child of the attempt; empty when tracing is off.
    trace_headers: tuple[tuple[str, str], ...] = ()
    priority: int | None = None  # the caller's (0-999, lower first), for upstreams that take it
    relevant_spans: SpanOptions | None = None  # only sent to deployments that support them
    # The model scores the documents together (listwise): one request, never sub-batches.
    listwise: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """Scores aligned with `UpstreamCall.documents` (scores[i] is documents[i])."""

    scores: list[float]
    search_units: int | None = None  # what the upstream billed, when it says
    upstream_request_id: str | None = None
    # Tokens the upstream reported it processed (and bills, for token-priced APIs), from
    # its usage field or header; None when it reports none.
    tokens: int | None = None
    # Per document (aligned with the scores), when the call asked for relevant spans.
    spans: list[tuple[Span, ...]] | None = None
    meta: UpstreamMeta | None = None


# Why an upstream call failed; bounded, used as a metric label.
ErrorKind = str
TIMEOUT: ErrorKind = "timeout"
CONNECT: ErrorKind = "connect"
STATUS: ErrorKind = "status"  # the upstream answered with an error status
MALFORMED: ErrorKind = "malformed"  # the upstream answered 2xx with an unusable body
AUTH: ErrorKind = "auth"  # the gateway's credentials were refused or unavailable


class ProviderError(Exception):
    """The one error type every provider raises.

    `retryable` tells the router whether trying again (here or elsewhere) can help;
    the caller's mistakes (400, 422) are never retryable.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        retryable: bool,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        upstream_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        self.upstream_request_id = upstream_request_id

    @property
    def deployment_fault(self) -> bool:
        """True when another deployment may well succeed: everything retryable, plus this
        deployment's own misconfiguration (refused credentials, unknown upstream model)."""
        return self.retryable or self.kind == AUTH or self.status == 404

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.message!r}, kind={self.kind!r}, status={self.status!r}, "
            f"retryable={self.retryable!r})"
        )


class ProviderStartError(Exception):
    """A provider cannot serve at all as configured (e.g. a model directory without a
    usable model): the gateway refuses to start, or a reload keeps the old config. The
    message names what is wrong and where."""


def is_retryable_status(status: int) -> bool:
    """Throttling, timeouts and server errors may pass; anything else will not."""
    return status in (408, 409, 429) or status >= 500


@runtime_checkable
class Provider(Protocol):
    """A backend that turns an `UpstreamCall` into scores.

    `batch_relative` is True when a document's score depends on the other documents
    in the call (the offline BM25 ranker): such scores must not be cached per document.
    """

    name: str
    type: str
    batch_relative: bool

    async def start(self) -> None:
        """Open pooled connections; called once on the running event loop."""

    async def close(self) -> None:
        """Release connections; called once at shutdown."""

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        """Score every document or raise `ProviderError`."""
        ...


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a gateway model can be served: a provider and its upstream model id."""

    name: str  # "<provider>/<upstream model>", stable, used in headers, metrics and logs
    provider: Provider
    model: str
    weight: float = 1.0
    priority: int = 0
    max_in_flight: int | None = None  # calls at once from this process; None: no limit
    relevant_spans: bool = False  # it can return Rerank 5's relevant spans
    score_scale: str | None = None  # one of SCORE_SCALES; None: not known
