"""Single flight across replicas sharing a Redis cache: a burst of identical new requests
split over two gateways makes one upstream call; if the process holding the lease dies
mid-call, the others still answer within their deadline."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import REDIS_URL, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults, fake_score
from tests.support.calls import post
from tests.support.processes import GatewayProcess
from tests.support.servers import free_port

QUERY = "which documents mention rockets"
DOCS = [f"document {i} on rockets and gardens" for i in range(12)]
BODY = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}


def shared_cache(upstream: str, prefix: str, **cache: Any) -> dict[str, Any]:
    # A Redis call slower than redis_timeout_s reads as "unavailable" (act alone), by
    # design; on a loaded test machine the default 80 ms is too tight for a burst.
    return gateway_config(
        {"cohere-a": upstream},
        cache={"backend": "redis", "key_prefix": prefix, "redis_timeout_s": 2.0, **cache},
        state={"redis_url": REDIS_URL},
    )


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def until(check: Callable[[], Any], what: str) -> None:
    """Poll an async condition for up to 10 s (a loud failure, never a silent pass)."""
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_burst_over_two_replicas_makes_one_upstream_call(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], cache_prefix: str
) -> None:
    fake, upstream = fake_cohere
    first = start_gateway(shared_cache(upstream, cache_prefix))
    second = start_gateway(shared_cache(upstream, cache_prefix))
    held = threading.Event()
    fake.faults = Faults(hold=held)
    leader = asyncio.create_task(post(first, BODY, TEAM_KEY))
    assert await asyncio.to_thread(fake.faults.arrived.wait, 5)  # the lease holder's call
    burst = [asyncio.create_task(post(url, BODY, TEAM_KEY)) for url in [first, second] * 20]

    async def second_waits() -> bool:
        return await metric(second, "rerank_fleet_waiting") == 1.0

    try:
        await until(second_waits, "the second replica's flight to wait on the first's lease")
    finally:
        held.set()
    answers = await asyncio.gather(leader, *burst)
    expected = sorted((fake_score(QUERY, d) for d in DOCS), reverse=True)
    for status, _, answer in answers:
        assert status == 200
        assert [r["relevance_score"] for r in answer["results"]] == expected
    assert len(fake.calls) == 1
    assert [a[1]["X-Cache"] for a in answers].count("miss") == 1
    assert await metric(second, 'rerank_fleet_waits_total{outcome="served"}') == 1.0
    # Only the leader was billed; the others' scores were saved.
    units = [a[2]["meta"]["billed_units"]["search_units"] for a in answers]
    assert sorted(units) == [0] * 40 + [1]


async def test_no_twin_costs_one_round_trip_and_no_wait(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], cache_prefix: str
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(shared_cache(upstream, cache_prefix))
    status, headers, _ = await post(url, BODY, TEAM_KEY)
    assert (status, headers["X-Cache"], len(fake.calls)) == (200, "miss", 1)
    assert await metric(url, "rerank_fleet_waiting") == 0.0
    assert "rerank_fleet_waits_total{" not in await _metrics(url)


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        return await resp.text()


async def test_a_dead_lease_holder_does_not_hold_the_others_past_their_wait(
    tmp_path: Path,
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    cache_prefix: str,
) -> None:
    fake, upstream = fake_cohere
    held = threading.Event()
    fake.faults = Faults(hold=held, times=1)  # only the doomed holder's call hangs
    config = shared_cache(upstream, cache_prefix, fleet_max_wait_ms=300)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    holder = GatewayProcess("--config", str(path), "--port", str(port))
    try:
        holder_url = f"http://127.0.0.1:{port}"
        holder.wait_ready(holder_url)
        doomed = asyncio.create_task(post(holder_url, BODY, TEAM_KEY))
        assert await asyncio.to_thread(fake.faults.arrived.wait, 10)
        survivor = start_gateway(config)
        waiting = [asyncio.create_task(post(survivor, BODY, TEAM_KEY)) for _ in range(5)]

        async def survivor_waits() -> bool:
            return await metric(survivor, "rerank_fleet_waiting") == 1.0

        await until(survivor_waits, "the survivor to wait on the holder's lease")
        holder.proc.kill()
        holder.proc.wait(10)
        answers = await asyncio.gather(*waiting)
        with pytest.raises(aiohttp.ClientError):
            await doomed
    finally:
        held.set()
        if holder.proc.poll() is None:
            holder.proc.kill()
    assert [status for status, _, _ in answers] == [200] * 5
    assert len(fake.calls) == 2  # the dead holder's, then the survivor's own
    assert await metric(survivor, 'rerank_fleet_waits_total{outcome="timed_out"}') == 1.0
