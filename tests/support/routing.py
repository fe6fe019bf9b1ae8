"""Helpers shared by the routing and tier-selection HTTP tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import build_app
from gateway.config import parse_config
from tests.conftest import ADMIN_KEY
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import FakeCohere
from tests.support.servers import ServerLoop

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def serve_fakes(servers: ServerLoop, *names: str) -> tuple[dict[str, FakeCohere], dict[str, str]]:
    fakes = {name: FakeCohere() for name in names}
    return fakes, {name: servers.serve(fake.app()) for name, fake in fakes.items()}


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
