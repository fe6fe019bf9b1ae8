"""The limits that bind before the CPU does: the upstream pool says when it is full, and
the listen backlog is a setting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import build_gateway
from gateway.config import ConfigError, load_config
from gateway.observe.metrics import Metrics
from providers.cohere import CohereOptions
from providers.http import HttpTransport


async def test_a_call_that_finds_the_pool_full_is_counted_and_still_served() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/", slow)
    server = TestServer(app)
    await server.start_server()
    transport = HttpTransport("up", max_connections=1)
    waits: list[int] = []
    queued = asyncio.Event()

    def on_wait() -> None:
        waits.append(1)
        queued.set()

    transport.on_pool_wait = on_wait
    try:
        url = server.make_url("/")
        first = asyncio.create_task(transport.post(url, b"{}", {}, 10))
        await arrived.wait()
        assert waits == []  # one connection, one call: no wait
        second = asyncio.create_task(transport.post(url, b"{}", {}, 10))
        await queued.wait()
        release.set()
        answers = await asyncio.gather(first, second)
        assert [a.status for a in answers] == [200, 200]
        assert waits == [1]
    finally:
        await transport.close()
        await server.close()


def test_provider_pools_default_to_1024_connections() -> None:
    assert CohereOptions().max_connections == 1024
    assert HttpTransport("up")._max_connections == 1024


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


BASE = """
auth: {mode: none}
providers: {up: {type: cohere, base_url: "http://127.0.0.1:9", api_key: k}}
models: {rerank-v3.5: {deployments: [{provider: up}]}}
"""


def test_backlog_and_gc_threshold_have_defaults_and_bounds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.server.backlog == 2048
    assert config.server.gc_threshold == 20_000
    config = load_config(write(tmp_path, BASE + "server: {backlog: 4096, gc_threshold: 700}\n"))
    assert (config.server.backlog, config.server.gc_threshold) == (4096, 700)
    with pytest.raises(ConfigError, match="backlog"):
        load_config(write(tmp_path, BASE + "server: {backlog: 0}\n"))


def test_the_gateway_counts_pool_waits_per_provider(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    metrics = Metrics()
    gateway = build_gateway(config, metrics)
    transport = gateway.catalog.providers["up"].transport  # type: ignore[attr-defined]
    assert transport.on_pool_wait is not None
    transport.on_pool_wait()
    assert (
        metrics.registry.get_sample_value("rerank_upstream_pool_waits_total", {"provider": "up"})
        == 1.0
    )
