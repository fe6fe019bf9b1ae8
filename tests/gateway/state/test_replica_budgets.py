"""Two gateway processes sharing one Redis: a concurrent burst over a team's budget and
over another team's rate limit. Limits hold across both, and every admitted request is
accounted exactly once (usage report vs 200 responses vs the upstream's calls)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import yaml

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, spend_in_redis
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.governance import get, governed
from tests.support.paths import ROOT
from tests.support.processes import gateway_processes
from tests.support.servers import ServerLoop

UNIT_MICROS = 2_000  # rerank-v3.5 at $2.00 per 1,000 search units
SMALL = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "x"]}
LARGE = {**SMALL, "documents": [f"document {i}" for i in range(150)]}  # 2 search units


@pytest.fixture
def replicas(
    servers: ServerLoop, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[list[str], FakeCohere, Path]]:
    fake = FakeCohere(faults=Faults(delay_s=0.02))  # keep requests in flight together
    data: dict[str, Any] = governed(
        {"cohere-a": servers.serve(fake.app())},
        backend="redis",
        prefix=redis_prefix,
        search={"budget": {"usd_per_day": 0.025}},  # 12 units fit, 13 do not
        ads={"rate_limit": {"requests_per_minute": 4}},
        limits={"max_documents": 1000},
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data))
    with gateway_processes(config, tmp_path) as (procs, urls):
        yield urls, fake, config
        # Still up: a process that lost its port to another server would have exited.
        for proc, url in zip(procs, urls, strict=True):
            assert proc.poll() is None, f"gateway at {url} exited during the test"


async def test_budget_burst_across_two_replicas(
    replicas: tuple[list[str], FakeCohere, Path], redis_client: redis_sync.Redis, redis_prefix: str
) -> None:
    urls, fake, config = replicas
    bodies = [LARGE if i % 2 else SMALL for i in range(40)]  # 60 units asked, 12 affordable
    results = await asyncio.gather(
        *(post(urls[i % 2], body, TEAM_KEY) for i, body in enumerate(bodies))
    )
    admitted = [
        (body, answer)
        for body, (status, _, answer) in zip(bodies, results, strict=True)
        if status == 200
    ]
    refused = [answer for status, _, answer in results if status != 200]
    assert all(status in (200, 402) for status, _, _ in results)
    assert all(a["message"].startswith("budget exhausted: team 'search'") for a in refused)
    units = sum(answer["meta"]["billed_units"]["search_units"] for _, answer in admitted)
    # Never over the budget; and full: only a 2-unit request could have been refused last.
    assert 11 <= units <= 12
    assert units * UNIT_MICROS <= 25_000
    # Exactly once: upstream calls, 200 responses, the shared counter and the usage report.
    assert len(fake.calls) == len(admitted)
    assert sum(-(-len(call["documents"]) // 100) for call in fake.calls) == units
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert spend_in_redis(redis_client, redis_prefix, "search", day) == units * UNIT_MICROS
    for url in urls:  # both replicas report the same shared figures
        status, _, report = await get(url + "/admin/usage?team=search", ADMIN_KEY)
        assert status == 200 and report["scope"] == "all replicas"
        rows = {r["deployment"]: r for r in report["rows"]}
        served = rows["cohere-a/rerank-v3.5"]
        assert served["requests"] == len(admitted)
        assert served["search_units"] == units
        assert served["cost_usd"] == pytest.approx(units * 0.002)
        assert served["documents"] == sum(len(body["documents"]) for body, _ in admitted)
        assert rows[None]["rejected_budget"] == len(refused)
    # The command-line report reads the same store.
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "usage", "--config", str(config), "--team", "search"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    line = next(x.split() for x in out.stdout.splitlines() if "cohere-a/rerank-v3.5" in x)
    assert line[:7] == [
        "search",
        "rerank-v3.5",
        "cohere-a/rerank-v3.5",
        str(len(admitted)),
        str(served["documents"]),
        str(units),
        f"{units * 0.002:.4f}",
    ]
    total = next(x.split() for x in out.stdout.splitlines() if "TOTAL" in x)
    assert total[-3:] == [str(len(refused)), "0", "0"]  # rejected, truncated, downgraded


async def test_rate_limit_holds_across_two_replicas(
    replicas: tuple[list[str], FakeCohere, Path],
) -> None:
    urls, fake, _ = replicas
    started = time.monotonic()
    results = await asyncio.gather(*(post(urls[i % 2], SMALL, OTHER_TEAM_KEY) for i in range(12)))
    elapsed = time.monotonic() - started
    statuses = [status for status, _, _ in results]
    seen = [(status, answer.get("message")) for status, _, answer in results]
    # 4 per minute, a burst of 4: one more every 15 s the burst might have taken.
    assert 4 <= statuses.count(200) <= 4 + int(elapsed // 15), (seen, elapsed)
    assert statuses.count(429) == 12 - statuses.count(200)
    assert all(
        a["message"].startswith("rate limit exceeded: team 'ads' may use 4 requests per minute")
        for status, _, a in results
        if status == 429
    )
    assert len(fake.calls) == statuses.count(200)


def test_usage_command_needs_redis(tmp_path: Path) -> None:
    config = tmp_path / "memory.yaml"
    config.write_text(yaml.safe_dump(governed({"cohere-a": "http://127.0.0.1:1"})))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "usage", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "usage: this needs Redis" in out.stderr and "GET /admin/usage" in out.stderr
