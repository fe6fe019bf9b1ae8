"""The limits that bind before the CPU does: the upstream pool says when it is full, and
the listen backlog is a setting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import build_gateway
from gateway.config import ConfigError, load_config
from gateway.observe.metrics import Metrics
from providers.cohere import CohereOptions
from providers.http import HttpTransport
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults


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


async def test_past_max_in_flight_a_request_is_shed_with_503_and_counted(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    held = threading.Event()
    fake.faults = Faults(hold=held, times=1)  # the first call waits for the test
    url = start_gateway(gateway_config({"cohere-a": upstream}, server={"max_in_flight": 1}))
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}
    headers = {"Authorization": f"Bearer {TEAM_KEY}"}
    async with aiohttp.ClientSession() as session:

        async def rerank(docs: tuple[str, ...] = ("a", "b")) -> tuple[int, dict, str | None]:
            sent = {**body, "documents": list(docs)}
            async with session.post(url + "/v2/rerank", json=sent, headers=headers) as resp:
                return resp.status, await resp.json(), resp.headers.get("Retry-After")

        first = asyncio.create_task(rerank())
        await asyncio.to_thread(fake.faults.arrived.wait, 10)
        status, answer, retry_after = await rerank()  # one is in flight: no room
        assert (status, retry_after) == (503, "1")
        assert set(answer) == {"id", "message"}
        assert "server.max_in_flight" in answer["message"]
        held.set()
        assert (await first)[0] == 200
        assert (await rerank(("c", "d")))[0] == 200  # room again once the first is answered
        async with session.get(url + "/metrics") as resp:
            metrics = await resp.text()
    assert "rerank_requests_shed_total 1.0" in metrics.splitlines()
    assert len(fake.calls) == 2  # the shed request never reached the upstream


def test_max_in_flight_is_off_by_default_and_bounded(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).server.max_in_flight is None
    with pytest.raises(ConfigError, match="max_in_flight"):
        load_config(write(tmp_path, BASE + "server: {max_in_flight: 0}\n"))


async def test_under_max_in_flight_a_team_is_held_to_its_share_while_another_waits(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    """Was: a team whose requests filled max_in_flight could take every slot again as its
    requests finished, so another team got 503 for as long as the first kept sending."""
    fake, upstream = fake_cohere
    first = threading.Event()
    fake.faults = Faults(hold=first, times=2)  # search's two requests wait in the upstream
    url = start_gateway(gateway_config({"cohere-a": upstream}, server={"max_in_flight": 2}))
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}
    async with aiohttp.ClientSession() as session:

        async def rerank(key: str, doc: str) -> tuple[int, str]:
            sent = {**body, "documents": [doc, "b"]}
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(url + "/v2/rerank", json=sent, headers=headers) as resp:
                return resp.status, (await resp.json()).get("message", "")

        second = threading.Event()
        try:
            held = [asyncio.create_task(rerank(TEAM_KEY, f"s{i}")) for i in range(2)]
            await asyncio.to_thread(fake.faults.arrived.wait, 10)
            for _ in range(1000):  # until both are held upstream (bounded)
                if len(fake.calls) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(fake.calls) == 2
            status, message = await rerank(OTHER_TEAM_KEY, "o1")
            assert status == 503 and "server.max_in_flight" in message  # full: ads now waits
            fake.faults = Faults(hold=second, times=1)
            first.set()
            assert [(await t)[0] for t in held] == [200, 200]
            again = asyncio.create_task(rerank(TEAM_KEY, "s3"))  # holds one slot of two
            await asyncio.to_thread(fake.faults.arrived.wait, 10)
            status, message = await rerank(TEAM_KEY, "s4")  # a slot is free, but ads waits
            assert status == 503 and "its share (1 of server.max_in_flight 2" in message
            assert (await rerank(OTHER_TEAM_KEY, "o2"))[0] == 200  # the free slot went to ads
            second.set()
            assert (await again)[0] == 200
        finally:  # a failed assertion must not leave the upstream holding
            first.set()
            second.set()
