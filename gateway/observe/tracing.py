"""OpenTelemetry traces of rerank requests, off by default.

One SERVER span per request (continuing the caller's W3C `traceparent`), one CLIENT span
per upstream attempt (retries, hedges and tier-race legs each their own),
and the internal steps that explain a latency or a bill (cache lookup, budget
reservation, coalescing wait, tier choice, fallback) as span events or short child
spans. The upstream receives the attempt's own context in `traceparent`, so its span is
a child of the attempt, not a sibling of it.

What a caller's trace context may decide (docs/security.md): its trace id and parent span
are continued, so its trace links up. Whether the request is sampled is the gateway's own
draw at `sample_ratio`, unless `telemetry.trust_parent` is set (callers inside the
operator's tracing, which then decide as W3C intends): otherwise any caller could have
every request recorded by sending the sampled flag, or a trace id that the ratio test
always passes. An untrusted caller's `tracestate` is dropped, and no caller's `tracestate`
or `baggage` is sent upstream: the upstreams are third parties.

The layers of the chain mark their work with one call each (`event`, `attempt`, `span`,
`leg`). The request's trace lives in a context variable, which asyncio copies into every
task the request starts, so hedges, coalesced flights and tier-race legs find their
parent without it being passed through every signature. When it is unset (tracing off,
or outside a request) every helper returns at once and no span object is made.

Attributes follow the OpenTelemetry GenAI conventions: `gen_ai.operation.name` is
"rerank" (a custom value, which the registry allows where no well-known one applies),
the rerank names of the open proposal (`gen_ai.rerank.*`, `gen_ai.usage.search_units`)
and a `rerank_gateway.*` namespace. Never query text, document text or keys: counts,
names from the config, statuses and error kinds only.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Coroutine, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

if TYPE_CHECKING:  # the SDK itself is imported only when tracing is configured
    from aiohttp import web
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from providers.types import Deployment, UpstreamCall, UpstreamResult

T = TypeVar("T")


class TelemetryConfig(Protocol):
    """The `telemetry:` section (gateway.config.loader.TelemetryConfig; observe is the
    lowest room and does not import config)."""

    @property
    def otlp_endpoint(self) -> str | None: ...
    @property
    def protocol(self) -> str | None: ...
    @property
    def sample_ratio(self) -> float | None: ...
    @property
    def service_name(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def trust_parent(self) -> bool: ...

OPERATION = "rerank"
NS = "rerank_gateway."
# gen_ai.provider.name per provider type: well-known values where the registry has one.
PROVIDER_NAMES = {
    "cohere": "cohere",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.inference",
    "oci": "oci.generative_ai",
    "local": "bm25.local",
    "tei": "hf.tei",
    "vllm": "vllm",
    "infinity": "infinity",
    "jina": "jina",
    "voyage": "voyage",
    "nim": "nvidia.nim",
}
DEFAULT_SERVICE = "rerank-gateway"
HTTP, GRPC = "http/protobuf", "grpc"


def version() -> str:
    try:
        return metadata.version("rerank-gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """Where and how to export, from `telemetry:` and then the standard OTEL_* variables."""

    endpoint: str
    protocol: str
    sample_ratio: float
    service_name: str
    headers: Mapping[str, str]
    trust_parent: bool = False  # a caller's sampled flag decides (else our own draw)

    @classmethod
    def resolve(cls, config: TelemetryConfig, env: Mapping[str, str]) -> TraceSettings | None:
        """None when tracing is off: no endpoint anywhere, or the SDK disabled by env."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
            return None
        protocol = (
            config.protocol
            or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or HTTP
        ).strip()
        if protocol not in (HTTP, GRPC):
            protocol = HTTP
        endpoint = _endpoint(config.otlp_endpoint, env, protocol)
        if endpoint is None:
            return None
        headers = {
            **_parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", "")),
            **_parse_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")),
            **config.headers,
        }
        return cls(
            endpoint=endpoint,
            protocol=protocol,
            sample_ratio=_ratio(config.sample_ratio, env),
            service_name=config.service_name or env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE,
            headers=headers,
            trust_parent=config.trust_parent,
        )


def _endpoint(configured: str | None, env: Mapping[str, str], protocol: str) -> str | None:
    """The exporter's URL. A signal-specific variable is used as given; a base URL (the
    config's or OTEL_EXPORTER_OTLP_ENDPOINT) gets `/v1/traces` appended for OTLP/HTTP."""
    if not configured and env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    base = (configured or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not base:
        return None
    if protocol == HTTP and not base.rstrip("/").endswith("/v1/traces"):
        return base.rstrip("/") + "/v1/traces"
    return base


def _parse_headers(value: str) -> dict[str, str]:
    """`k1=v1,k2=v2`, percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS is defined."""
    headers = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(val.strip())
    return headers


def _ratio(configured: float | None, env: Mapping[str, str]) -> float:
    if configured is not None:
        return configured
    if "traceidratio" in env.get("OTEL_TRACES_SAMPLER", "") and env.get("OTEL_TRACES_SAMPLER_ARG"):
        try:
            return min(1.0, max(0.0, float(env["OTEL_TRACES_SAMPLER_ARG"])))
        except ValueError:
            pass
    return 1.0


# --------------------------------------------------------------------------- the tracer


class Tracing:
    """A tracer provider of this gateway's own (not the global one), so a reload or a
    test builds a fresh one and closes the old."""

    def __init__(self, settings: TraceSettings, exporter: SpanExporter | None = None) -> None:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.settings = settings
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": version()}
        )
        ratio = settings.sample_ratio
        sampler: Sampler = ParentBased(TraceIdRatioBased(ratio))
        if not settings.trust_parent:  # a caller's context is continued, not obeyed
            own = _own_draw(ratio)
            sampler = ParentBased(
                TraceIdRatioBased(ratio), remote_parent_sampled=own, remote_parent_not_sampled=own
            )
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        if exporter is not None:  # tests: spans are exported as they end
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings)))
        self.tracer: Tracer = self.provider.get_tracer("rerank_gateway", version())
        # Inbound: trace context and baggage. Outbound: traceparent only (`attempt`), since
        # baggage and tracestate may carry a caller's data and the upstreams are third
        # parties.
        self.inbound = CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
        )
        self.outbound = TraceContextTextMapPropagator()
        self._servers: dict[str, tuple[str, int | None]] = {}

    @classmethod
    def build(
        cls,
        config: TelemetryConfig,
        env: Mapping[str, str] | None = None,
        exporter: SpanExporter | None = None,
    ) -> Tracing | None:
        """The tracer the config asks for, or None (off). An injected `exporter` turns
        tracing on with defaults when the config names no endpoint (tests)."""
        settings = TraceSettings.resolve(config, os.environ if env is None else env)
        if settings is None and exporter is not None:
            ratio = 1.0 if config.sample_ratio is None else config.sample_ratio
            settings = TraceSettings("", HTTP, ratio, DEFAULT_SERVICE, {}, config.trust_parent)
        return cls(settings, exporter) if settings is not None else None

    def start(self, request: web.Request) -> RequestTrace:
        """Open the request's SERVER span and make it the parent of what follows."""
        parent = self.inbound.extract(request.headers)
        route = request.match_info.route.resource
        path = route.canonical if route is not None else request.path
        span = self.tracer.start_span(
            f"{request.method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": path,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "gen_ai.operation.name": OPERATION,
            },
        )
        trace = RequestTrace(self, span, set_span_in_context(span, parent))
        trace.token = _SCOPE.set(Scope(trace, span))
        return trace

    def attempt(self, scope: Scope, deployment: Deployment, call: UpstreamCall) -> Attempt:
        provider_type = getattr(deployment.provider, "type", "unknown")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type, provider_type),
            "gen_ai.request.model": deployment.model,
            "gen_ai.rerank.candidate.count": len(call.documents),
            NS + "deployment": deployment.name,
            NS + "attempt": scope.trace.attempts,
            NS + "hedge": scope.in_flight > 0,
        }
        if scope.trace.top_n is not None:
            attributes["gen_ai.rerank.top_n"] = scope.trace.top_n
        address, port = self._server(deployment)
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        scope.trace.attempts += 1
        span = self.tracer.start_span(
            f"{OPERATION} {deployment.model}",
            context=set_span_in_context(scope.parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        carrier: dict[str, str] = {}
        self.outbound.inject(carrier, context=set_span_in_context(span))
        carrier.pop("tracestate", None)  # a caller's vendor data is not the upstream's
        return Attempt(span, scope, (("traceparent", carrier["traceparent"]),))

    def child(self, scope: Scope, name: str, attributes: Mapping[str, Any]) -> Span:
        return self.tracer.start_span(
            NS + name, context=set_span_in_context(scope.parent), attributes=attributes
        )

    def _server(self, deployment: Deployment) -> tuple[str, int | None]:
        """The upstream's host and port, from the provider's URL when it has one."""
        known = self._servers.get(deployment.name)
        if known is None:
            provider = deployment.provider
            url = getattr(provider, "url", None)
            if not isinstance(url, str):
                url = getattr(provider, "base", None)
            parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
            known = (parts.hostname or "", parts.port) if parts is not None else ("", None)
            if parts is not None and parts.port is None and parts.scheme in ("http", "https"):
                known = (known[0], 443 if parts.scheme == "https" else 80)
            self._servers[deployment.name] = known
        return known

    def close(self) -> None:
        """Flush what is queued and stop the exporter (a reload or shutdown)."""
        self.provider.shutdown()


def _own_draw(ratio: float) -> Any:
    """A sampler for requests whose caller sent a trace context we do not obey: sampled
    with probability `ratio` by a random draw (a trace id test would let the caller,
    who chose the id, decide), and without the caller's `tracestate`."""
    import random

    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class OwnDraw(Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            if ratio > 0.0 and random.random() < ratio:
                return SamplingResult(Decision.RECORD_AND_SAMPLE)
            return SamplingResult(Decision.DROP)

        def get_description(self) -> str:
            return f"OwnDraw{{{ratio}}}"

    return OwnDraw()


def _otlp_exporter(settings: TraceSettings) -> SpanExporter:
    if settings.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = settings.endpoint.startswith("http://") or None
        return GrpcExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers), insecure=insecure
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers))


# --------------------------------------------------------------------------- per request


class RequestTrace:
    """The SERVER span of one request and what its attempts share."""

    __slots__ = ("attempts", "context", "span", "token", "top_n", "tracing")

    def __init__(self, tracing: Tracing, span: Span, context: Any) -> None:
        self.tracing = tracing
        self.span = span
        self.context = context
        self.attempts = 0  # numbers the CLIENT spans of the request: 0, 1, ...
        self.top_n: int | None = None
        self.token: Any = None

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def traceparent(self) -> str:
        ctx = self.span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def request(self, model: str, team: str, documents: int, top_n: int | None) -> None:
        """What the request asked for, once parsed (counts and config names only)."""
        self.top_n = top_n
        attributes: dict[str, Any] = {
            "gen_ai.request.model": model,
            NS + "team": team,
            "gen_ai.rerank.candidate.count": documents,
        }
        if top_n is not None:
            attributes["gen_ai.rerank.top_n"] = top_n
        self.span.set_attributes(attributes)

    def finish(self, status: int, headers: Mapping[str, str], error: str | None) -> None:
        """Close the SERVER span with the answer's status and what served it."""
        _SCOPE.reset(self.token)
        attributes: dict[str, Any] = {"http.response.status_code": status}
        for header, name in (
            ("X-Rerank-Model", "gen_ai.response.model"),
            ("X-Rerank-Deployment", NS + "deployment"),
            ("X-Cache", NS + "cache"),
        ):
            value = headers.get(header)
            if value:
                attributes[name] = value
        if status >= 400:
            attributes["error.type"] = str(status)
        self.span.set_attributes(attributes)
        if status >= 500:  # a 4xx is the caller's mistake, not a failure of this server
            self.span.set_status(Status(StatusCode.ERROR, error and error[:64]))
        self.span.end()


@dataclass(slots=True)
class Scope:
    """Where new spans and events go: the request's SERVER span or a tier-race leg."""

    trace: RequestTrace
    parent: Span
    in_flight: int = 0  # attempts running under this parent (another one is a hedge)


_SCOPE: ContextVar[Scope | None] = ContextVar("rerank_gateway_trace", default=None)


class Attempt:
    """The CLIENT span of one upstream call; a context manager that ends it."""

    __slots__ = ("headers", "scope", "span")

    def __init__(self, span: Span, scope: Scope, headers: tuple[tuple[str, str], ...]) -> None:
        self.span = span
        self.scope = scope
        self.headers = headers

    def stamp(self, call: UpstreamCall) -> UpstreamCall:
        """The call with this attempt's `traceparent` (and `tracestate`) to send."""
        return replace(call, trace_headers=self.headers)

    def answered(self, result: UpstreamResult, model: str) -> None:
        attributes: dict[str, Any] = {"gen_ai.response.model": model, NS + "outcome": "ok"}
        if result.search_units is not None:
            attributes["gen_ai.usage.search_units"] = result.search_units
        if result.tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = result.tokens
        self.span.set_attributes(attributes)

    def __enter__(self) -> Attempt:
        self.scope.in_flight += 1
        return self

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        self.scope.in_flight -= 1
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError):  # a hedge that lost, or the caller left
                self.span.set_attribute(NS + "outcome", "cancelled")
            else:
                kind = getattr(exc, "kind", None)
                status = getattr(exc, "status", None)
                error_type = str(status) if status else (kind or exc.__class__.__name__)
                self.span.set_attributes({"error.type": error_type, NS + "outcome": "error"})
                self.span.set_status(Status(StatusCode.ERROR, error_type))
        self.span.end()


class _Untraced:
    """What the helpers hand out when the request is not traced: does nothing."""

    __slots__ = ()

    def stamp(self, call: UpstreamCall) -> UpstreamCall:
        return call

    def answered(self, result: UpstreamResult, model: str) -> None:
        pass

    def set(self, **attributes: Any) -> None:
        pass

    def __enter__(self) -> _Untraced:
        return self

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        pass


UNTRACED = _Untraced()


class _Child:
    """A short INTERNAL span (e.g. a coalescing wait) as a context manager."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes({NS + k: v for k, v in attributes.items()})

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.span.set_attribute(NS + "outcome", exc.__class__.__name__)
        self.span.end()


# --------------------------------------------------------------------------- helpers
# What the chain layers call. Each first looks for the current scope; without one
# (tracing off) it returns at once.


def attempt(deployment: Deployment, call: UpstreamCall) -> Attempt | _Untraced:
    """`with tracing.attempt(d, call) as a: result = await d.provider.rerank(a.stamp(call))`"""
    scope = _SCOPE.get()
    if scope is None:
        return UNTRACED
    return scope.trace.tracing.attempt(scope, deployment, call)


def event(name: str, **attributes: Any) -> None:
    """A span event `rerank_gateway.<name>` on the current span (counts and names only)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.parent.add_event(NS + name, attributes)


def span(name: str, **attributes: Any) -> _Child | _Untraced:
    """A child span `rerank_gateway.<name>` around a step: `with tracing.span(...) as s:`."""
    scope = _SCOPE.get()
    if scope is None:
        return UNTRACED
    attrs = {NS + k: v for k, v in attributes.items()}
    return _Child(scope.trace.tracing.child(scope, name, attrs))


def leg(which: str, model: str, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """Run a tier-race leg under a span of its own, so its attempts are its children."""
    scope = _SCOPE.get()
    if scope is None:
        return coro
    return _leg(scope, which, model, coro)


async def _leg(scope: Scope, which: str, model: str, coro: Coroutine[Any, Any, T]) -> T:
    child = scope.trace.tracing.child(
        scope, "tier_race." + which, {NS + "tier_race.leg": which, "gen_ai.request.model": model}
    )
    _SCOPE.set(Scope(scope.trace, child))  # this task's own copy of the context
    outcome = "error"
    try:
        result = await coro
        outcome = "answered"
        return result
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        child.set_attribute(NS + "outcome", outcome)
        child.end()


def current_trace_id() -> str | None:
    """The trace id of the request being served, for log lines (None when not traced)."""
    scope = _SCOPE.get()
    return scope.trace.trace_id if scope is not None else None
