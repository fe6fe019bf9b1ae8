"""Depth advice across replicas: two gateway processes on one Redis (a scratch prefix)
count into the same window and give one fleet-wide advice; `rerank-gateway depth` reads
it from outside."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REDIS_URL, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.depth_traces import advice, grade, row, send
from tests.support.paths import ROOT
from tests.support.processes import GatewayProcess, gateway_processes
from tests.support.servers import ServerLoop, free_port


@pytest.fixture
def fleet(
    servers: ServerLoop, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[list[str], Path]]:
    fake = FakeCohere(score=grade)
    data: dict[str, Any] = gateway_config(
        {"cohere-a": servers.serve(fake.app())},
        state={"redis_url": REDIS_URL},
        cache={"backend": "none"},
        limits={"redis_prefix": redis_prefix},  # the depth keys follow it
        # Counts reach Redis only when a test asks (GET /admin/depth flushes first).
        depth={"flush_s": 300, "refresh_s": 3600},
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "COHERE_API_KEY"}
    with gateway_processes(path, tmp_path, env=env) as (_, urls):
        yield urls, path


async def test_two_replicas_give_one_fleet_wide_advice(
    fleet: tuple[list[str], Path], redis_prefix: str
) -> None:
    (first, second), path = fleet
    rng = random.Random(31)
    await send(first, rng, 30, 100, 20)
    await send(second, rng, 30, 100, 20)
    # The second replica alone: 30 requests, short of the 50 an advice needs.
    alone = row(await advice(second), "search")
    assert alone["requests"] == 30 and alone["status"] == "insufficient_data"
    merged = row(await advice(first), "search")  # adds the first replica's 30
    again = row(await advice(second), "search")
    # The same figures from either replica; only what depends on the moment of reading
    # (requests per day) and on the replica (its latency model) may differ.
    for name in ("latency_ms_p90", "requests_per_day"):
        del merged["saving"][name], again["saving"][name]
    assert merged == again
    assert merged["requests"] == 60 and merged["status"] == "advice" and merged["needs"] == 20
    assert (await advice(first))["scope"] == "fleet (Redis)"

    cli = subprocess.run(
        [sys.executable, "-m", "gateway", "depth", "--config", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert row(json.loads(cli.stdout), "search")["needs"] == 20
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "depth", "--config", str(path), "--team", "search"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("search "))
    assert line.split()[:6] == ["search", "rerank-v3.5", "advise", "60", "100", "/"]
    assert "needs its first 20 documents" in table.stdout


def test_the_cli_needs_redis(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config({"cohere-a": "http://127.0.0.1:9"})))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "depth", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "needs state.redis_url" in out.stderr


def test_a_replica_stops_at_once_when_told_to_right_after_start(
    servers: ServerLoop, redis_prefix: str, tmp_path: Path
) -> None:
    # The depth task's first Redis calls run as the process starts; a SIGTERM then must
    # not wait on them (a cancelled call could swallow the cancellation and hang).
    data = gateway_config(
        {"cohere-a": servers.serve(FakeCohere().app())},
        state={"redis_url": REDIS_URL},
        limits={"redis_prefix": redis_prefix},
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    for _ in range(5):
        port = free_port()
        gateway = GatewayProcess("--config", str(path), "--port", str(port))
        try:
            gateway.wait_ready(f"http://127.0.0.1:{port}")
            gateway.signal(signal.SIGTERM)
            assert gateway.proc.wait(15) == 0, "".join(gateway.raw)
        finally:
            if gateway.proc.poll() is None:  # it hung: leave nothing running
                gateway.proc.kill()
                gateway.proc.wait(10)
