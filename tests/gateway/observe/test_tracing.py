"""OpenTelemetry traces end to end: the span tree of a request, in the SDK's in-memory
exporter and through a loopback OTLP/HTTP receiver.

The shapes checked: a miss (SERVER -> one CLIENT), a partial hit (the CLIENT span counts
only the documents sent), a full hit (no CLIENT span), a failover (two CLIENT spans, the
first failed), a tier race (one INTERNAL span per leg, each with its CLIENT span). The
upstream fake records the `traceparent` it received: it must name the attempt's span.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import build_app
from gateway.config import parse_config
from gateway.config.model import TelemetryConfig
from gateway.http.runtime import RUNTIME
from gateway.observe.tracing import GRPC, HTTP, TraceSettings, Tracing
from tests.conftest import ADMIN_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.fakes.otlp import FakeCollector
from tests.support.calls import DOCS, post
from tests.support.routing import AUTO, FAST, PRO, budget, rerank_auto, serve_fakes
from tests.support.servers import ServerLoop

INBOUND_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INBOUND_PARENT = "00f067aa0ba902b7"


def serve(servers: ServerLoop, data: dict[str, Any]) -> tuple[str, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    app = build_app(parse_config(data, {}), span_exporter=exporter)
    return servers.serve(app), exporter


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def events(span: ReadableSpan) -> dict[str, dict[str, Any]]:
    return {e.name: dict(e.attributes or {}) for e in span.events}


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def sent_traceparents(fake: FakeCohere) -> list[str]:
    return [h["traceparent"] for h in fake.headers]


def span_traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@pytest.fixture
def one(servers: ServerLoop) -> tuple[FakeCohere, str, InMemorySpanExporter]:
    fakes, urls = serve_fakes(servers, "a")
    url, exporter = serve(servers, gateway_config({"a": urls["a"]}))
    return fakes["a"], url, exporter


async def test_a_miss_is_one_server_span_with_one_client_span_that_the_upstream_continues(
    one: tuple[FakeCohere, str, InMemorySpanExporter],
) -> None:
    fake, url, exporter = one
    status, headers, _ = await post(
        url, {"model": "rerank-v3.5", "query": "capital", "documents": DOCS, "top_n": 2}
    )
    assert status == 200
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert server.name == "POST /v2/rerank"
    assert parent_of(client) == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    assert client.name == "rerank rerank-v3.5"
    attrs = dict(client.attributes or {})
    assert attrs["gen_ai.operation.name"] == "rerank"
    assert attrs["gen_ai.provider.name"] == "cohere"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "rerank-v3.5"
    assert attrs["server.address"] == "127.0.0.1" and isinstance(attrs["server.port"], int)
    assert attrs["gen_ai.rerank.candidate.count"] == 3
    assert attrs["gen_ai.rerank.top_n"] == 2
    assert attrs["gen_ai.usage.search_units"] == 1
    assert attrs["rerank_gateway.attempt"] == 0 and attrs["rerank_gateway.hedge"] is False
    assert attrs["rerank_gateway.outcome"] == "ok"
    # The upstream's parent is the attempt, not the server span (nor the caller's).
    assert sent_traceparents(fake) == [span_traceparent(client)]
    server_attrs = dict(server.attributes or {})
    assert server_attrs["http.response.status_code"] == 200
    assert server_attrs["rerank_gateway.team"] == "search"
    assert server_attrs["rerank_gateway.cache"] == "miss"
    assert events(server)["rerank_gateway.cache.lookup"] == {
        "status": "miss",
        "documents": 3,
        "cached": 0,
        "upstream": 3,
    }
    # The caller gets the trace: the server span's own context.
    assert headers["traceparent"] == span_traceparent(server)


async def test_a_partial_hit_sends_and_traces_only_the_new_documents(
    one: tuple[FakeCohere, str, InMemorySpanExporter],
) -> None:
    _, url, exporter = one
    await post(url, {"model": "rerank-v3.5", "query": "capital", "documents": DOCS[:2]})
    exporter.clear()
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Cache"] == "partial"
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert client.attributes["gen_ai.rerank.candidate.count"] == 1  # type: ignore[index]
    assert events(server)["rerank_gateway.cache.lookup"]["status"] == "partial"
    assert events(server)["rerank_gateway.cache.lookup"]["cached"] == 2
    exporter.clear()
    status, headers, _ = await post(url)
    assert headers["X-Cache"] == "hit"
    assert by_kind(exporter.get_finished_spans(), SpanKind.CLIENT) == []


async def test_an_inbound_traceparent_is_continued_and_no_tracestate_passed_on(
    one: tuple[FakeCohere, str, InMemorySpanExporter],
) -> None:
    """Was: the caller's tracestate went to the upstream (a third party) as sent."""
    fake, url, exporter = one
    status, headers, _ = await post(
        url,
        headers={
            "traceparent": f"00-{INBOUND_TRACE}-{INBOUND_PARENT}-01",
            "tracestate": "vendor=abc",
            "baggage": "tenant=acme",
        },
    )
    assert status == 200
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    (client,) = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    assert f"{server.context.trace_id:032x}" == INBOUND_TRACE
    assert f"{parent_of(server):016x}" == INBOUND_PARENT
    assert not server.context.trace_state  # an untrusted caller's vendor data is dropped
    assert headers["traceparent"].startswith(f"00-{INBOUND_TRACE}-")
    sent = fake.headers[-1]
    assert sent["traceparent"] == span_traceparent(client)
    assert "tracestate" not in {k.lower() for k in sent}
    assert "baggage" not in {k.lower() for k in sent}  # tenant data stays with us


def serve_sampling(
    servers: ServerLoop, ratio: float, trust_parent: bool
) -> tuple[FakeCohere, str, InMemorySpanExporter]:
    fakes, urls = serve_fakes(servers, "a")
    telemetry = {"sample_ratio": ratio, "trust_parent": trust_parent}
    url, exporter = serve(servers, gateway_config({"a": urls["a"]}, telemetry=telemetry))
    return fakes["a"], url, exporter


async def test_a_caller_cannot_force_sampling_past_the_ratio(servers: ServerLoop) -> None:
    """Was: a sampled flag (or a trace id under the ratio's bound) in the caller's
    traceparent had every request recorded, whatever sample_ratio said."""
    fake, url, exporter = serve_sampling(servers, ratio=0.0, trust_parent=False)
    low_id = "0" * 31 + "1"  # passes any trace-id ratio test above 0
    for trace_id in (INBOUND_TRACE, low_id):
        status, headers, _ = await post(
            url, headers={"traceparent": f"00-{trace_id}-{INBOUND_PARENT}-01"}
        )
        assert status == 200
        assert headers["traceparent"].startswith(f"00-{trace_id}-")  # still continued
        assert int(headers["traceparent"][-2:], 16) & 1 == 0  # but not sampled
    assert exporter.get_finished_spans() == ()
    assert all(h["traceparent"].endswith("-00") for h in fake.headers)


async def test_an_untrusted_unsampled_caller_is_sampled_by_the_ratio(servers: ServerLoop) -> None:
    _, url, exporter = serve_sampling(servers, ratio=1.0, trust_parent=False)
    status, _, _ = await post(
        url, headers={"traceparent": f"00-{INBOUND_TRACE}-{INBOUND_PARENT}-00"}
    )
    assert status == 200
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == INBOUND_TRACE


async def test_a_trusted_caller_decides_and_keeps_its_tracestate_but_not_upstream(
    servers: ServerLoop,
) -> None:
    fake, url, exporter = serve_sampling(servers, ratio=0.0, trust_parent=True)
    sampled = {"traceparent": f"00-{INBOUND_TRACE}-{INBOUND_PARENT}-01", "tracestate": "v=1"}
    assert (await post(url, headers=sampled))[0] == 200
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.context.trace_state.to_header() == "v=1"
    assert "tracestate" not in {k.lower() for k in fake.headers[-1]}
    exporter.clear()
    inbound = f"00-{INBOUND_TRACE}-{INBOUND_PARENT}-00"
    status, headers, _ = await post(url, headers={"traceparent": inbound})
    assert status == 200
    assert exporter.get_finished_spans() == ()  # an unsampled trusted caller: not recorded
    assert headers["traceparent"].startswith(f"00-{INBOUND_TRACE}-")
    assert int(headers["traceparent"][-2:], 16) & 1 == 0  # not sampled
    assert fake.headers[-1]["traceparent"].startswith(f"00-{INBOUND_TRACE}-")


async def test_failover_makes_two_client_spans_the_first_one_failed(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=503)
    url, exporter = serve(servers, gateway_config(urls))
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == "b/rerank-v3.5"
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    clients = sorted(
        by_kind(spans, SpanKind.CLIENT),
        key=lambda s: s.attributes["rerank_gateway.attempt"],  # type: ignore[index]
    )
    assert [c.attributes["rerank_gateway.deployment"] for c in clients] == [  # type: ignore[index]
        "a/rerank-v3.5",
        "b/rerank-v3.5",
    ]
    first, second = clients
    assert first.attributes["error.type"] == "503"  # type: ignore[index]
    assert first.attributes["rerank_gateway.outcome"] == "error"  # type: ignore[index]
    assert not first.status.is_ok
    assert second.attributes["rerank_gateway.outcome"] == "ok"  # type: ignore[index]
    assert {parent_of(c) for c in clients} == {server.context.span_id}
    assert sent_traceparents(fakes["a"]) == [span_traceparent(first)]
    assert sent_traceparents(fakes["b"]) == [span_traceparent(second)]


async def test_a_tier_race_has_a_span_per_leg_with_its_own_attempt(servers: ServerLoop) -> None:
    upstreams, urls = serve_fakes(servers, "pro", "fast")
    upstreams["pro"].faults = Faults(hang=True)
    url, exporter = serve(servers, rerank_auto(urls, pro_ms=100, fast_ms=200))
    status, headers, _ = await post(url, AUTO, headers=budget(400))
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    spans = exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    legs = {s.name: s for s in by_kind(spans, SpanKind.INTERNAL)}
    primary, backup = (
        legs["rerank_gateway.tier_race.primary"],
        legs["rerank_gateway.tier_race.backup"],
    )
    assert parent_of(primary) == parent_of(backup) == server.context.span_id
    assert primary.attributes["gen_ai.request.model"] == PRO  # type: ignore[index]
    assert primary.attributes["rerank_gateway.outcome"] == "cancelled"  # type: ignore[index]
    assert backup.attributes["rerank_gateway.outcome"] == "answered"  # type: ignore[index]
    clients = {s.attributes["gen_ai.request.model"]: s for s in by_kind(spans, SpanKind.CLIENT)}  # type: ignore[index]
    assert parent_of(clients[PRO]) == primary.context.span_id
    assert parent_of(clients[FAST]) == backup.context.span_id
    assert clients[PRO].attributes["rerank_gateway.outcome"] == "cancelled"  # type: ignore[index]
    choice = events(server)["rerank_gateway.tier.choice"]
    assert choice == {"alias": "rerank-auto", "tier": "pro", "reason": "fits"}
    assert dict(server.attributes or {})["gen_ai.response.model"] == FAST
    assert upstreams["fast"].headers[0]["traceparent"] == span_traceparent(clients[FAST])


async def test_a_budget_reservation_is_an_event(servers: ServerLoop) -> None:
    _, urls = serve_fakes(servers, "a")
    data = gateway_config({"a": urls["a"]})
    data["teams"]["search"]["budget"] = {"usd_per_day": 100.0}
    url, exporter = serve(servers, data)
    status, _, _ = await post(url)
    assert status == 200
    (server,) = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    reserve = events(server)["rerank_gateway.budget.reserve"]
    assert reserve["outcome"] == "admitted" and reserve["units"] == 1


async def test_no_text_or_key_reaches_any_attribute(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=401)  # refused credentials on a: failover to b
    url, exporter = serve(servers, gateway_config(urls))
    secret_query = "zebra-query-text-7d1"
    docs = ["first-document-text-91c", "second-document-text-a02"]
    status, _, _ = await post(
        url, {"model": "rerank-v3.5", "query": secret_query, "documents": docs}
    )
    assert status == 200
    status, _, _ = await post(url, {"model": "nope", "query": secret_query, "documents": docs})
    assert status in (400, 404)
    spans = exporter.get_finished_spans()
    assert len(by_kind(spans, SpanKind.CLIENT)) == 2
    forbidden = [secret_query, *docs, TEAM_KEY, ADMIN_KEY, "upstream-key"]
    seen = []
    for s in spans:
        seen += [str(v) for v in (s.attributes or {}).values()]
        seen += [str(k) for k in (s.attributes or {})]
        for e in s.events:
            seen += [e.name, *(str(v) for v in (e.attributes or {}).values())]
        seen += [s.name, str(s.status.description)]
    for value in seen:
        for text in forbidden:
            assert text not in value, (text, value)


async def test_spans_reach_an_otlp_http_collector(servers: ServerLoop) -> None:
    collector = FakeCollector()
    collector_url = servers.serve(collector.app())
    fakes, urls = serve_fakes(servers, "a")
    data = gateway_config(
        {"a": urls["a"]},
        telemetry={
            "otlp_endpoint": collector_url,
            "service_name": "rg-test",
            "headers": {"x-collector-token": "t0k"},
        },
    )
    app = build_app(parse_config(data, {}))
    url = servers.serve(app)
    status, headers, _ = await post(url)
    assert status == 200
    tracing = app[RUNTIME].gateway.tracing
    assert tracing is not None and tracing.settings.endpoint == collector_url + "/v1/traces"
    assert tracing.provider.force_flush(10_000)
    assert collector.received.wait(10)
    names = {(s.kind, s.name) for s in collector.spans}
    assert ("SERVER", "POST /v2/rerank") in names and ("CLIENT", "rerank rerank-v3.5") in names
    server = next(s for s in collector.spans if s.kind == "SERVER")
    client = next(s for s in collector.spans if s.kind == "CLIENT")
    assert client.parent_span_id == server.span_id
    assert headers["traceparent"].startswith(f"00-{server.trace_id}-{server.span_id}-")
    assert (
        fakes["a"].headers[0]["traceparent"].startswith(f"00-{client.trace_id}-{client.span_id}-")
    )
    assert server.resource["service.name"] == "rg-test"
    assert collector.headers[0]["x-collector-token"] == "t0k"


def test_tracing_is_off_without_an_endpoint_and_env_fills_what_config_leaves_out() -> None:
    assert Tracing.build(TelemetryConfig(), env={}) is None
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,x=1",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    settings = TraceSettings.resolve(TelemetryConfig(), env)
    assert settings == TraceSettings(
        "http://collector:4318/v1/traces", HTTP, 0.25, "from-env", {"api-key": "a b", "x": "1"}
    )
    configured = TelemetryConfig(
        otlp_endpoint="http://otel:4317", protocol="grpc", sample_ratio=0.5, service_name="rg"
    )
    settings = TraceSettings.resolve(configured, env)
    assert settings is not None
    assert (settings.endpoint, settings.protocol, settings.sample_ratio) == (
        "http://otel:4317",
        GRPC,
        0.5,
    )
    assert TraceSettings.resolve(configured, {**env, "OTEL_SDK_DISABLED": "true"}) is None
    tracing = Tracing(settings)  # the gRPC exporter builds (it connects lazily)
    tracing.close()


def test_tracing_off_makes_no_span_objects() -> None:
    from gateway.observe import tracing

    assert tracing.attempt(object(), object()) is tracing.UNTRACED  # type: ignore[arg-type]
    assert tracing.span("x", a=1) is tracing.UNTRACED
    assert tracing.current_trace_id() is None
    coro = _noop()
    assert tracing.leg("primary", "m", coro) is coro
    coro.close()


async def _noop() -> None:
    return None


def test_tei_batches_each_carry_the_attempt_traceparent_and_report_tokens(
    servers: ServerLoop,
) -> None:
    # TEI reads traceparent, so its spans join the gateway's trace as the attempt's children.
    from tests.fakes.tei import FakeTei
    from tests.support.selfhosted import MANY_DOCS, QUERY, provider_config
    from tests.support.selfhosted import post_sync as raw_post

    fake = FakeTei()
    url = servers.serve(fake.app())
    model = "BAAI/bge-reranker-v2-m3"
    data = provider_config(
        {"tei": {"type": "tei", "base_url": url, "max_batch_size": 32}}, "bge", model
    )
    gateway, exporter = serve(servers, data)
    answer = raw_post(gateway, {"model": "bge", "query": QUERY, "documents": MANY_DOCS})
    assert answer.status_code == 200
    (client,) = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    attrs = dict(client.attributes or {})
    assert attrs["gen_ai.provider.name"] == "hf.tei"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert len(fake.headers) == 4  # 100 documents in batches of 32
    assert {h["traceparent"] for h in fake.headers} == {span_traceparent(client)}
