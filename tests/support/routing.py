"""Helpers shared by the routing and tier-selection HTTP tests: fakes and gateways to
serve, the `rerank-auto` alias over a pro and a fast fake, admin reads and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.auth import hash_key
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import FakeCohere
from tests.support.calls import DOCS
from tests.support.servers import ServerLoop

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PRO, FAST = "rerank-v4.0-pro", "rerank-v4.0-fast"
AUTO = {"model": "rerank-auto", "query": "capital", "documents": DOCS}


def serve_fakes(servers: ServerLoop, *names: str) -> tuple[dict[str, FakeCohere], dict[str, str]]:
    fakes = {name: FakeCohere() for name in names}
    return fakes, {name: servers.serve(fake.app()) for name, fake in fakes.items()}


def rerank_auto(
    urls: dict[str, str],
    pro_ms: float | None,
    fast_ms: float | None,
    *,
    alias: dict[str, Any] | None = None,
    teams: dict[str, Any] | None = None,
    cache: str = "none",
    **routing: Any,
) -> dict[str, Any]:
    """Teams search and ads; `rerank-auto` over PRO (fake "pro") and FAST (fake "fast"),
    each with a latency prior of the given ms (none for None), `alias` settings on top;
    the score cache `cache` ("none": repeated requests must reach the upstreams)."""

    def model(name: str, provider: str, prior_ms: float | None) -> dict[str, Any]:
        settings: dict[str, Any] = {"deployments": [{"provider": provider, "model": name}]}
        if prior_ms is not None:
            settings["latency_prior_ms"] = {"base_ms": prior_ms}
        return settings

    return {
        "auth": {"mode": "keys", "admin_key_sha256": hash_key(ADMIN_KEY)},
        "teams": {
            "search": {"key_sha256": [hash_key(TEAM_KEY)], **(teams or {}).get("search", {})},
            "ads": {"key_sha256": [hash_key(OTHER_TEAM_KEY)]},
        },
        "providers": {
            name: {"type": "cohere", "base_url": url, "api_key": "upstream-key"}
            for name, url in urls.items()
        },
        "models": {
            PRO: model(PRO, "pro", pro_ms),
            FAST: model(FAST, "fast", fast_ms),
            "rerank-auto": {"tiers": {"pro": PRO, "fast": FAST}, **(alias or {})},
        },
        "routing": routing,
        "cache": {"backend": cache},
    }


def budget(ms: int) -> dict[str, str]:
    """The header that gives a request its latency budget."""
    return {"X-Latency-Budget-Ms": str(ms)}


def start(servers: ServerLoop, data: dict[str, Any], clock: FakeClock | None = None) -> str:
    return servers.serve(build_app(parse_config(data, {}), clock=clock))


async def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as resp:
        text = await resp.text()
        is_json = resp.content_type == "application/json"
        return resp.status, (await resp.json() if is_json else text)


async def deployments(url: str) -> dict[str, Any]:
    status, body = await get(url, "/admin/deployments", ADMIN)
    assert status == 200
    return body["deployments"]


async def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    _, text = await get(url, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition (not a fixed sleep: returns as soon as it holds)."""
    give_up = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < give_up, "condition not reached"
        await asyncio.sleep(0.005)
