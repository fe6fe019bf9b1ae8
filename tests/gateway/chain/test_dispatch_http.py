"""Failover routing end to end: the gateway over HTTP in front of faulty fake upstreams.

Breaker cooldowns run on an injected fake clock; waits are on conditions, never on
fixed sleeps. Timing bounds are generous upper limits on the deadline, not speeds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jsonschema
import pytest

from gateway.http.auth import hash_key
from tests.conftest import TEAM_KEY, gateway_config
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import Faults, fake_score
from tests.support.calls import BODY, DOCS, post
from tests.support.routing import ADMIN, deployments, get, metric, serve_fakes, start, wait_for
from tests.support.servers import ServerLoop

A, B = "a/rerank-v3.5", "b/rerank-v3.5"
DEADLINE_MARGIN_S = 0.5  # what a request may outlive its deadline by, on a busy machine


def config(
    urls: dict[str, str], *, model: dict[str, Any] | None = None, **routing: Any
) -> dict[str, Any]:
    """rerank-v3.5 served by the given fakes in priority order, with routing settings
    (no score cache: repeated requests must reach the upstreams)."""
    data = gateway_config(urls, cache={"backend": "none"})
    data["models"]["rerank-v3.5"].update(model or {})
    breaker = {"failures": 1000, "min_calls": 1000, **routing.pop("breaker", {})}
    data["routing"] = {"breaker": breaker, **routing}
    return data


# --- circuit breaker -------------------------------------------------------------------


async def test_breaker_opens_skips_probes_after_cooldown_and_recovers(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=503)
    clock = FakeClock()
    url = start(
        servers, config(urls, breaker={"failures": 2, "cooldown_s": 30, "probes": 1}), clock
    )

    for _ in range(2):
        status, headers, _ = await post(url)
        assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert len(fakes["a"].calls) == 2
    state = (await deployments(url))[A]
    assert (state["state"], state["calls"], state["error_rate"]) == ("open", 2, 1.0)
    assert state["cooldown_remaining_s"] == 30.0
    assert await metric(url, "rerank_breaker_state", deployment=A) == 2
    assert await metric(url, "rerank_breaker_state", deployment=B) == 0

    status, headers, _ = await post(url)  # a is skipped: no traffic while open
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert len(fakes["a"].calls) == 2

    clock.advance(30)
    assert (await deployments(url))[A]["state"] == "half_open"
    assert await metric(url, "rerank_breaker_state", deployment=A) == 1
    fakes["a"].faults = Faults()  # a has recovered
    status, headers, _ = await post(url)  # the probe
    assert status == 200 and headers["X-Rerank-Deployment"] == A
    assert len(fakes["a"].calls) == 3
    assert (await deployments(url))[A]["state"] == "closed"
    assert await metric(url, "rerank_breaker_state", deployment=A) == 0


async def test_failed_probe_reopens_the_breaker(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=500)
    clock = FakeClock()
    url = start(
        servers, config(urls, breaker={"failures": 1, "cooldown_s": 10, "probes": 1}), clock
    )
    await post(url)
    assert len(fakes["a"].calls) == 1
    clock.advance(10)
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert len(fakes["a"].calls) == 2  # exactly one probe
    state = (await deployments(url))[A]
    assert state["state"] == "open" and state["cooldown_remaining_s"] == 10.0
    await post(url)
    assert len(fakes["a"].calls) == 2


async def test_every_breaker_open_answers_a_short_503_and_keeps_the_cooldown_for_operators(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(status=503)
    clock = FakeClock()
    url = start(servers, config(urls, breaker={"failures": 1, "cooldown_s": 30}), clock)

    status, headers, body = await post(url)
    assert status == 503 and len(fakes["a"].calls) == 1  # opened: the retry skipped it
    assert (
        "a answered 503" in body["message"]
        and "not tried, circuit open: a/rerank-v3.5" in body["message"]
    )

    clock.advance(12)
    status, headers, body = await post(url)
    assert status == 503 and len(fakes["a"].calls) == 1  # nobody was called
    # Not the 18 s left: SDKs would sleep that long before each of their two retries.
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("1", "100")
    assert "circuit breaker is open" in body["message"] and "rerank-v3.5" in body["message"]
    assert "probed again in 18 s" in body["message"]  # the breaker's own timing
    assert set(body) == {"id", "message"}
    assert await metric(url, "rerank_breaker_probe_at_seconds", deployment=A) > time.time()
    assert (
        await metric(url, "rerank_deployment_skips_total", deployment=A, reason="breaker_open") == 2
    )

    clock.advance(18)  # cooldown over: a probe goes through although every breaker was open
    fakes["a"].faults = Faults()
    status, _, _ = await post(url)
    assert status == 200 and len(fakes["a"].calls) == 2


# --- fallback --------------------------------------------------------------------------


async def test_passthrough_fallback_returns_the_callers_order_unbilled(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(status=503)
    url = start(servers, config(urls, model={"fallback": "passthrough"}))
    status, headers, body = await post(url)
    assert status == 200
    assert headers["X-Rerank-Deployment"] == "fallback/passthrough"
    assert headers["X-Rerank-Model"] == "rerank-v3.5"
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert body["meta"]["billed_units"]["search_units"] == 0
    (warning,) = body["meta"]["warnings"]
    assert "a answered 503" in warning and "original order" in warning and "passthrough" in warning
    assert await metric(url, "rerank_fallbacks_total", model="rerank-v3.5", mode="passthrough") == 1


async def test_local_fallback_ranks_offline_when_every_breaker_is_open(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(reset=True)
    clock = FakeClock()
    url = start(servers, config(urls, model={"fallback": "local"}, breaker={"failures": 1}), clock)
    await post(url)
    calls = len(fakes["a"].calls)
    status, headers, body = await post(url, {**BODY, "top_n": 2})
    assert len(fakes["a"].calls) == calls  # breaker open: answered without calling anyone
    assert status == 200 and headers["X-Rerank-Deployment"] == "fallback/local"
    assert {r["index"] for r in body["results"]} == {0, 2}  # the two documents with "capital"
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"] > 0
    assert body["meta"]["billed_units"]["search_units"] == 0
    assert "offline BM25" in body["meta"]["warnings"][0]
    assert "circuit breaker is open" in body["meta"]["warnings"][0]


async def test_fallback_does_not_hide_the_callers_mistake(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(status=400)
    url = start(servers, config(urls, model={"fallback": "passthrough"}))
    status, _, body = await post(url)
    assert status == 400 and "rejected the request" in body["message"]


# --- failures of single calls ----------------------------------------------------------


async def test_hanging_deployment_times_out_and_fails_over(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(hang=True)
    data = config(urls)
    data["providers"]["a"]["timeout_s"] = 0.2
    url = start(servers, data)
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert (len(fakes["a"].calls), len(fakes["b"].calls)) == (1, 1)


@pytest.mark.parametrize(
    ("headers", "model", "deadline_s"),
    [
        ({"X-Latency-Budget-Ms": "300"}, {}, 0.3),
        ({}, {"timeout_s": 0.3}, 0.3),
        ({"X-Latency-Budget-Ms": "60000"}, {"timeout_s": 0.3}, 0.3),  # the smaller wins
    ],
)
async def test_no_request_outlives_its_deadline(
    servers: ServerLoop, headers: dict[str, str], model: dict[str, Any], deadline_s: float
) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(hang=True)
    url = start(servers, config(urls, model=model))
    began = time.monotonic()
    status, _, body = await post(url, headers=headers)
    elapsed = time.monotonic() - began
    assert status == 504 and "rerank-v3.5" in body["message"]
    assert deadline_s * 0.9 <= elapsed < deadline_s + DEADLINE_MARGIN_S
    assert len(fakes["a"].calls) == 1  # no time was left for a retry


async def test_connection_reset_fails_over(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(reset=True)
    url = start(servers, config(urls))
    status, headers, body = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert body["results"][0]["relevance_score"] == fake_score(
        "capital", DOCS[body["results"][0]["index"]]
    )
    assert len(fakes["a"].calls) == 1


async def test_lone_deployment_is_retried_and_retry_after_is_honoured(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(status=429, retry_after="0.2", times=1)
    url = start(servers, config(urls))
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == A
    first, second = fakes["a"].arrivals
    assert second - first >= 0.19  # waited for Retry-After before calling again


async def test_long_retry_after_skips_to_the_next_deployment(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=429, retry_after="5")
    url = start(servers, config(urls))
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert (len(fakes["a"].calls), len(fakes["b"].calls)) == (1, 1)
    assert (
        await metric(url, "rerank_deployment_skips_total", deployment=A, reason="retry_after") == 1
    )


async def test_callers_mistake_is_not_retried_nor_held_against_the_breaker(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(status=422)
    url = start(servers, config(urls, breaker={"failures": 1}))
    for _ in range(2):
        status, _, _ = await post(url)
        assert status == 422
    assert len(fakes["a"].calls) == 2  # one call per request
    assert (await deployments(url))[A]["state"] == "closed"


async def test_retry_budget_caps_amplification_when_everything_fails(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    for fake in fakes.values():
        fake.faults = Faults(status=503)
    clock = FakeClock()  # the budget's window does not slide during the test
    budget = {"ratio": 0.2, "min_per_s": 0.0, "window_s": 10}
    url = start(servers, config(urls, retry_budget=budget), clock)
    requests = 20
    for _ in range(requests):
        status, _, _ = await post(url)
        assert status == 503
    calls = len(fakes["a"].calls) + len(fakes["b"].calls)
    # Without the budget: 3 calls per request (60). With it: 20% more than one each.
    assert requests < calls <= requests * 1.2
    exhausted = await metric(url, "rerank_retry_budget_exhausted_total", model="rerank-v3.5")
    assert exhausted >= requests - (calls - requests)
    status, body = await get(url, "/admin/deployments", ADMIN)
    assert body["retry_budget"]["requests"] == requests


async def test_full_bulkhead_skips_to_the_next_deployment(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(hang=True)
    data = config(urls)
    data["models"]["rerank-v3.5"]["deployments"][0]["max_in_flight"] = 1
    data["providers"]["a"]["timeout_s"] = 1.0
    url = start(servers, data)
    first = asyncio.create_task(post(url))
    await wait_for(lambda: len(fakes["a"].calls) == 1)
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert len(fakes["a"].calls) == 1  # a was full: not called
    assert (await deployments(url))[A]["in_flight"] == 1
    status, headers, _ = await first  # a timed out, then b answered
    assert status == 200 and headers["X-Rerank-Deployment"] == B


# --- hedging ---------------------------------------------------------------------------


async def test_hedge_answers_from_another_deployment_when_the_first_is_slow(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(hang=True)
    url = start(servers, config(urls, model={"hedge": {"enabled": True, "delay_ms": 50}}))
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert (len(fakes["a"].calls), len(fakes["b"].calls)) == (1, 1)
    assert await metric(url, "rerank_hedges_total", model="rerank-v3.5", outcome="won") == 1
    assert (await deployments(url))[A]["in_flight"] == 0  # the loser was cancelled


async def test_hedge_delay_defaults_to_the_observed_p95(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    data = config(urls, model={"hedge": {"enabled": True}}, latency={"min_samples": 1})
    url = start(servers, data)
    status, headers, _ = await post(url)  # no observations yet: no hedge
    assert status == 200 and headers["X-Rerank-Deployment"] == A
    fakes["a"].faults = Faults(hang=True)
    status, headers, _ = await post(url)  # a is now far slower than its p95
    assert status == 200 and headers["X-Rerank-Deployment"] == B
    assert await metric(url, "rerank_hedges_total", model="rerank-v3.5", outcome="won") == 1


async def test_no_hedging_unless_enabled(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(delay_s=0.2)
    url = start(servers, config(urls))
    status, headers, _ = await post(url)
    assert status == 200 and headers["X-Rerank-Deployment"] == A
    assert len(fakes["b"].calls) == 0


# --- the budget header and the admin view ----------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", " ", "\uff11\uff12"])
async def test_invalid_latency_budget_is_400(servers: ServerLoop, value: str) -> None:
    _, urls = serve_fakes(servers, "a")
    url = start(servers, config(urls))
    status, _, body = await post(url, headers={"X-Latency-Budget-Ms": value})
    assert status == 400
    assert (
        "X-Latency-Budget-Ms header must be a positive whole number of milliseconds"
        in body["message"]
    )


async def test_admin_deployments_needs_the_admin_key(servers: ServerLoop) -> None:
    _, urls = serve_fakes(servers, "a")
    url = start(servers, config(urls))
    assert (await get(url, "/admin/deployments"))[0] == 401
    assert (await get(url, "/admin/deployments", {"Authorization": f"Bearer {TEAM_KEY}"}))[0] == 401
    await post(url)
    state = (await deployments(url))[A]
    assert state["models"] == ["rerank-v3.5"] and state["state"] == "closed"
    assert state["calls"] == 1 and state["error_rate"] == 0.0 and state["in_flight"] == 0
    assert set(state["latency_ms"]) == {"p50", "p90", "p99"}
    assert all(v is not None and v > 0 for v in state["latency_ms"].values())

    data = config(urls)
    data["auth"] = {"mode": "keys"}
    data["teams"] = {"search": {"key_sha256": [hash_key(TEAM_KEY)]}}
    no_admin = start(servers, data)
    assert (await get(no_admin, "/admin/deployments", ADMIN))[0] == 403


async def test_admin_deployments_matches_the_admin_spec(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a", "b")
    fakes["a"].faults = Faults(status=503)
    url = start(servers, config(urls, breaker={"failures": 1}))
    await post(url)
    status, spec = await get(url, "/admin/openapi.json", ADMIN)
    assert status == 200 and "/admin/deployments" in spec["paths"]
    status, body = await get(url, "/admin/deployments", ADMIN)
    assert status == 200 and body["deployments"][A]["state"] == "open"
    schema = {**spec, "$ref": "#/components/schemas/Deployments"}
    jsonschema.Draft202012Validator(schema).validate(body)


async def test_with_the_cache_on_a_deadline_falls_back_and_the_fallback_is_not_cached(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].faults = Faults(hang=True, times=1)
    data = gateway_config(urls)  # the default memory cache, with coalescing
    data["models"]["rerank-v3.5"]["fallback"] = "passthrough"
    url = start(servers, data)
    status, headers, body = await post(url, headers={"X-Latency-Budget-Ms": "300"})
    assert status == 200 and headers["X-Rerank-Deployment"] == "fallback/passthrough"
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    status, headers, body = await post(url)  # a answers now: real scores, not cached ones
    assert status == 200 and headers["X-Rerank-Deployment"] == A
    assert headers["X-Cache"] == "miss"
    assert body["results"][0]["relevance_score"] == fake_score(
        "capital", DOCS[body["results"][0]["index"]]
    )
