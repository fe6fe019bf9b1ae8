"""Operator events: breaker transitions (on an injected clock), refused credentials,
fallbacks, and budget thresholds with the alert webhook against a loopback receiver."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from aiohttp import web

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.runtime import RUNTIME
from tests.conftest import REDIS_URL, gateway_config
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import Faults
from tests.support.calls import post
from tests.support.routing import metric, serve_fakes, start, wait_for
from tests.support.servers import ServerLoop

A, B = "a/rerank-v3.5", "b/rerank-v3.5"


def operator_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("operator_event")]


async def test_breaker_open_half_open_and_close_are_logged_and_counted(
    servers: ServerLoop,
) -> None:
    fakes, urls = serve_fakes(servers, "b", "a")
    fakes["b"].faults = Faults(status=503, times=1)
    clock = FakeClock()
    data = gateway_config(urls)
    data["routing"] = {"breaker": {"failures": 1, "cooldown_s": 30, "probes": 1}}
    data["cache"] = {"backend": "none"}  # every request goes upstream
    url = start(servers, data, clock)
    with structlog.testing.capture_logs() as logs:
        assert (await post(url))[0] == 200  # b fails, opens; a answers
        clock.advance(31)
        assert (await post(url))[0] == 200  # b half-open, its probe succeeds: closed
    events = [(e["event"], e["deployment"], e["reason"]) for e in operator_events(logs)]
    assert events == [
        ("breaker_opened", B, "consecutive_failures"),
        ("breaker_half_open", B, "cooldown_elapsed"),
        ("breaker_closed", B, "probes_succeeded"),
    ]
    opened = next(e for e in logs if e["event"] == "breaker_opened")
    assert opened["log_level"] == "warning" and opened["models"] == ["rerank-v3.5"]
    assert opened["recent_calls"] == 1 and opened["recent_error_rate"] == 1.0
    for state in ("open", "half_open", "closed"):
        assert await metric(url, "rerank_breaker_transitions_total", deployment=B, state=state) == 1
    assert await metric(url, "rerank_operator_events_total", event="breaker_opened") == 1
    assert await metric(url, "rerank_breaker_transitions_total", deployment=A, state="open") == 0


async def test_refused_credentials_and_a_fallback_are_operator_events(servers: ServerLoop) -> None:
    fakes, urls = serve_fakes(servers, "a")
    fakes["a"].api_key = "rotated"  # the gateway's key is refused with 401
    data = gateway_config(urls)
    data["models"]["rerank-v3.5"]["fallback"] = "passthrough"
    url = start(servers, data)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            status, headers, _ = await post(url)
            assert status == 200 and headers["X-Rerank-Deployment"] == "fallback/passthrough"
    refused = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert refused and all(e["deployment"] == A and e["status"] == 401 for e in refused)
    assert await metric(url, "rerank_credentials_refused_total", deployment=A) == len(refused)
    fallbacks = [e for e in logs if e["event"] == "fallback_engaged"]
    assert len(fallbacks) == 1  # logged once per interval, counted every time
    assert fallbacks[0]["model"] == "rerank-v3.5" and fallbacks[0]["mode"] == "passthrough"
    assert await metric(url, "rerank_operator_events_total", event="fallback_engaged") == 3


class Receiver:
    """A loopback webhook endpoint: fails the first `fail_first` posts with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[dict[str, Any]] = []
        self.attempts = 0
        self.got = threading.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        self.posts.append(await request.json())
        self.got.set()
        return web.Response(status=204)


def budget_config(upstream: str, hook: str, **limits: Any) -> dict[str, Any]:
    data = gateway_config({"a": upstream}, alerts={"webhook_url": hook, "thresholds": [0.5, 1.0]})
    # $0.01 a day; each request costs $0.002 (1 search unit at the default price).
    data["teams"]["search"]["budget"] = {"usd_per_day": 0.01}
    data["cache"] = {"backend": "none"}
    if limits:
        data["limits"] = limits
        data["state"] = {"redis_url": REDIS_URL}
    return data


def idle(app: web.Application) -> bool:
    alerts = app[RUNTIME].gateway.alerts
    hooks = [h._task for h in alerts.webhooks.values()]
    return not alerts._tasks and all(t is None or t.done() for t in hooks)


async def test_the_webhook_gets_each_threshold_once_retried_after_a_failure(
    servers: ServerLoop,
) -> None:
    receiver = Receiver(fail_first=1)
    hook = servers.serve(receiver.app()) + "/hook"
    _, urls = serve_fakes(servers, "a")
    app = build_app(parse_config(budget_config(urls["a"], hook), {}))
    url = servers.serve(app)
    statuses = []
    with structlog.testing.capture_logs() as logs:
        for _ in range(7):
            statuses.append((await post(url))[0])
            await wait_for(lambda: idle(app))
    assert statuses == [200] * 5 + [402] * 2  # the budget holds 5 requests
    assert [(p["threshold"], p["spent_usd"]) for p in receiver.posts] == [(0.5, 0.006), (1.0, 0.01)]
    first = receiver.posts[0]
    assert first["type"] == "budget_threshold_crossed" and first["team"] == "search"
    assert first["budget"] == "usd_per_day" and first["limit_usd"] == 0.01
    assert receiver.attempts == 3  # the first delivery failed once and was retried
    crossed = [e for e in logs if e["event"] == "budget_threshold_crossed"]
    assert [e["threshold"] for e in crossed] == [0.5, 1.0]
    for threshold in ("0.5", "1"):
        assert (
            await metric(
                url,
                "rerank_budget_alerts_total",
                team="search",
                budget="usd_per_day",
                threshold=threshold,
            )
            == 1
        )
    assert await metric(url, "rerank_alert_webhooks_total", outcome="sent") == 2


async def test_replicas_sharing_redis_alert_once_between_them(
    servers: ServerLoop, cache_prefix: str
) -> None:
    receiver = Receiver()
    hook = servers.serve(receiver.app()) + "/hook"
    _, urls = serve_fakes(servers, "a")
    data = budget_config(urls["a"], hook, limits_backend="redis", redis_prefix=cache_prefix)
    replicas = [build_app(parse_config(data, {})) for _ in range(2)]
    gateways = [servers.serve(app) for app in replicas]
    for i in range(6):
        await post(gateways[i % 2])
        await wait_for(lambda: all(idle(app) for app in replicas))
    assert sorted(p["threshold"] for p in receiver.posts) == [0.5, 1.0]


async def test_a_dead_webhook_never_delays_a_request(servers: ServerLoop) -> None:
    _, urls = serve_fakes(servers, "a")
    hold = threading.Event()

    async def hang(request: web.Request) -> web.Response:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, hold.wait)
        return web.Response(status=204)

    hung = web.Application()
    hung.router.add_post("/hook", hang)
    hook = servers.serve(hung) + "/hook"
    url = servers.serve(build_app(parse_config(budget_config(urls["a"], hook), {})))
    try:
        statuses = [(await post(url))[0] for _ in range(5)]  # crosses both thresholds
        assert statuses == [200] * 5  # answered while the webhook hangs
    finally:
        hold.set()


async def test_a_budget_downgrade_is_an_operator_event(
    fake_cohere: tuple[Any, str], start_gateway: Any
) -> None:
    from tests.gateway.state.test_governance_http import BODY
    from tests.support.governance import tiered

    budget = {"usd_per_day": 0.0025, "on_exhausted": "downgrade"}
    url = start_gateway(tiered(fake_cohere[1], search={"budget": budget}))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            assert (await post(url, {**BODY, "model": "rerank-4"}))[0] == 200
    (event,) = [e for e in logs if e["event"] == "tier_downgraded"]
    assert (event["team"], event["budget"], event["model"]) == (
        "search",
        "usd_per_day",
        "rerank-v4.0-fast",
    )
    assert await metric(url, "rerank_operator_events_total", event="tier_downgraded") == 1
