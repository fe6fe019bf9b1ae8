"""Budgets that survive Redis: a flushed or restarted Redis (and a restarted single
process) does not give a team its budget again; the counter is seeded from the ledger,
once, and the usage report does not move."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import redis as redis_sync
import yaml

from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.calls import post
from tests.support.governance import get, governed, metrics_text
from tests.support.ledger import BODY, UNIT_MICROS, ledger_section, migrate, wait_for
from tests.support.postgres import SHARED_DSN
from tests.support.processes import gateway_processes
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop

BUDGET_UNITS = 10


def config_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def budgeted(upstream: str, redis_url: str, schema: str) -> dict[str, Any]:
    """Team `search` with a daily budget of BUDGET_UNITS search units, its counters in
    `redis_url`, a migrated ledger in `schema`."""
    await migrate(SHARED_DSN, schema)
    data = governed(
        {"cohere-a": upstream},
        backend="redis",
        prefix="rg:",
        search={"budget": {"usd_per_day": BUDGET_UNITS * UNIT_MICROS / 1e6}},
        state={"redis_url": redis_url},
    )
    data["ledger"] = ledger_section(SHARED_DSN, schema)
    return data


async def spend_until_refused(urls: list[str], limit: int = 50) -> int:
    """Requests admitted, alternating replicas, until the budget refuses one."""
    for i in range(limit):
        status = (await post(urls[i % 2], {**BODY, "query": f"more {i}"}, TEAM_KEY))[0]
        if status == 402:
            return i
        assert status == 200
    raise AssertionError(f"no 402 after {limit} requests")


async def report(url: str, requests: int, refused: int = 0) -> dict[str, Any]:
    """The team's totals once the ledger holds `requests` served and `refused` refused."""

    async def landed() -> dict[str, Any] | None:
        status, _, found = await get(url + "/admin/usage?team=search&by=team", ADMIN_KEY)
        assert status == 200, found
        totals = found["totals"].get("search")
        if totals is None or (totals["requests"], totals["rejected_budget"]) != (
            requests,
            refused,
        ):
            return None
        return totals

    return await wait_for(landed, f"{requests} served and {refused} refused in the ledger")


def rebuilds(text: str) -> int:
    pattern = r'rerank_budget_rebuilds_total\{outcome="rebuilt",team="search"\} (\S+)'
    return sum(int(float(v)) for v in re.findall(pattern, text))


async def test_a_flushed_or_restarted_redis_gives_no_budget_back(
    own_redis: OwnRedis, ledger_schema: str, servers: ServerLoop, tmp_path: Path
) -> None:
    fake = FakeCohere()
    data = await budgeted(servers.serve(fake.app()), own_redis.url, ledger_schema)
    with gateway_processes(config_file(tmp_path, data), tmp_path) as (_, urls):
        for i in range(4):
            assert (await post(urls[i % 2], {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
        before = await report(urls[0], 4)

        redis_sync.Redis.from_url(own_redis.url).flushall()  # mid-day, everything gone
        assert await report(urls[1], 4) == before  # the record is the ledger's, not Redis's
        # $X left (six requests' worth) is exactly what both replicas admit together.
        assert await spend_until_refused(urls) == BUDGET_UNITS - 4
        # Seeded once for the fleet: one replica rebuilt, the other waited for it.
        texts = [await metrics_text(url) for url in urls]
        assert sum(rebuilds(t) for t in texts) == 2  # first use of the ledger, then the flush

        own_redis.stop()  # a restart of a Redis that keeps nothing on disk
        own_redis.start()
        assert await spend_until_refused(urls) == 0  # nothing left, still
        after = await report(urls[0], BUDGET_UNITS, refused=2)
        assert after["cost_usd"] == BUDGET_UNITS * UNIT_MICROS / 1e6
    assert len(fake.calls) == BUDGET_UNITS


async def test_a_restarted_single_process_keeps_its_budget(
    ledger_schema: str, servers: ServerLoop, tmp_path: Path
) -> None:
    """limits_backend memory: the counters die with the process; the ledger seeds them."""
    fake = FakeCohere()
    await migrate(SHARED_DSN, ledger_schema)
    data = governed(
        {"cohere-a": servers.serve(fake.app())},
        search={"budget": {"usd_per_day": BUDGET_UNITS * UNIT_MICROS / 1e6}},
    )
    data["ledger"] = ledger_section(SHARED_DSN, ledger_schema)
    path = config_file(tmp_path, data)
    with gateway_processes(path, tmp_path, count=1) as (_, urls):
        for i in range(7):
            assert (await post(urls[0], {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
    with gateway_processes(path, tmp_path, count=1) as (_, urls):
        assert await spend_until_refused(urls * 2) == BUDGET_UNITS - 7


async def test_redis_restored_from_an_old_snapshot_is_seeded_from_the_ledger(
    ledger_schema: str, servers: ServerLoop, tmp_path: Path
) -> None:
    """The counters come back older than the truth, markers and all: only the change of
    server (its run id) tells. One replica notices and forgets the counters; the next
    request seeds them from the ledger."""
    own = OwnRedis(keep=tmp_path)
    own.start()
    fake = FakeCohere()
    data = await budgeted(servers.serve(fake.app()), own.url, ledger_schema)
    try:
        with gateway_processes(config_file(tmp_path, data), tmp_path) as (_, urls):
            for i in range(3):
                assert (await post(urls[i % 2], {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
            await wait_for(_incarnation_stored(own.url), "the replicas to note the server")
            redis_sync.Redis.from_url(own.url).save()  # the snapshot: 3 spent
            for i in range(3, 6):
                assert (await post(urls[i % 2], {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
            own.stop()
            own.start()  # back with 3 spent, though 6 were
            await report(urls[0], 6)
            logs = [tmp_path / f"gateway-{i}.log" for i in range(2)]
            await wait_for(_logged(logs, "budget_counters_forgotten"), "a replica to forget")
            assert await spend_until_refused(urls) == BUDGET_UNITS - 6
            forgotten = sum(p.read_text().count('"budget_counters_forgotten"') for p in logs)
            assert forgotten == 1  # one replica saw the change
    finally:
        own.stop()
    assert len(fake.calls) == BUDGET_UNITS


def _incarnation_stored(url: str) -> Any:
    async def stored() -> bool:
        return redis_sync.Redis.from_url(url).get("rg:incarnation") is not None

    return stored


def _logged(paths: list[Path], event: str) -> Any:
    async def found() -> bool:
        return any(f'"{event}"' in p.read_text() for p in paths)

    return found
