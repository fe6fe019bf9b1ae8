"""Types shared by providers, policies and the gateway.

This is the one module that both `providers` and `policies` may import; it holds
only plain data and the provider contract, no behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """Scores aligned with `UpstreamCall.documents` (scores[i] is documents[i])."""

    scores: list[float]
    search_units: int | None = None  # what the upstream billed, when it says
    upstream_request_id: str | None = None
    # Tokens the upstream reported it processed (and bills, for token-priced APIs), from
    # its usage field or header; None when it reports none.
    tokens: int | None = None


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
