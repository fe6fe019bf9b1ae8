"""A Sentinel failover mid-burst on Redis's default settings (no min-replicas-to-write),
two gateway replicas: the old master takes writes for a while and then erases them. The
ledger does not depend on Redis, so nothing is lost from the record; the budget counter
is seeded again from the ledger, so it ends equal to what was served."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
import yaml

from tests.conftest import TEAM_KEY, gateway_config, spend_in_redis
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.ledger import BODY, UNIT_MICROS, ledger_section, migrate, served_events
from tests.support.postgres import SHARED_DSN
from tests.support.processes import gateway_processes
from tests.support.redis_topologies import OwnSentinel
from tests.support.servers import ServerLoop


@pytest.fixture
def unsafe_sentinel() -> Iterator[OwnSentinel]:
    own = OwnSentinel(safe=False)
    try:
        own.start()
        yield own
    finally:
        own.stop()


async def test_sentinel_failover_mid_burst_on_default_settings(
    unsafe_sentinel: OwnSentinel, ledger_schema: str, servers: ServerLoop, tmp_path: Path
) -> None:
    fake = FakeCohere(faults=Faults(delay_s=0.005))
    await migrate(SHARED_DSN, ledger_schema)
    data = gateway_config({"cohere-a": servers.serve(fake.app())},
                          state={"redis_url": unsafe_sentinel.url})  # fmt: skip
    data["teams"]["search"]["budget"] = {"usd_per_day": 100.0}  # far away: never refuses
    data["cache"] = {"backend": "none"}
    data["ledger"] = ledger_section(SHARED_DSN, ledger_schema, rebuild_wait_s=2.0)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data))
    statuses: list[int] = []
    triggered, switched = threading.Event(), threading.Event()

    def fail_over() -> None:
        unsafe_sentinel.failover()
        switched.set()

    with gateway_processes(config, tmp_path) as (_, urls):

        async def client(worker: int) -> None:
            sent = 0
            while len(statuses) < 100 or not switched.is_set() or sent < 10:
                if len(statuses) >= 100 and not triggered.is_set():
                    triggered.set()
                    threading.Thread(target=fail_over, daemon=True).start()
                body = {**BODY, "query": f"q{worker}-{len(statuses)}"}
                statuses.append((await post(urls[worker % 2], body, TEAM_KEY))[0])
                sent = sent + 1 if switched.is_set() else 0

        await asyncio.gather(*(client(w) for w in range(10)))
        assert unsafe_sentinel.master_port_now() == unsafe_sentinel.replica_port
        await asyncio.to_thread(unsafe_sentinel.wait_old_master_rejoined)
        for url in urls:  # after the old master's writes are gone for good
            statuses.append((await post(url, {**BODY, "query": "after"}, TEAM_KEY))[0])
        answered = statuses.count(200)
        assert set(statuses) <= {200, 503}
        deadline = time.monotonic() + 20
        while len(served := await served_events(SHARED_DSN, ledger_schema)) < answered:
            assert time.monotonic() < deadline, f"{len(served)} of {answered} events"
            await asyncio.sleep(0.1)
        # The record: every 200 once, every upstream call once.
        assert len(served) == answered == len(fake.calls)
        assert len({e["id"] for e in served}) == answered
        # The counter: what the ledger says was spent (seeded again after the failover).
        day = time.strftime("%Y-%m-%d", time.gmtime())
        master = redis_sync.Redis(port=unsafe_sentinel.master_port_now())
        spent = spend_in_redis(master, "rerank:", "search", day)
        master.close()
        assert spent == sum(e["cost_micros"] for e in served) == answered * UNIT_MICROS
        print(f"\nsentinel failover on default settings: {answered} answered, "
              f"{statuses.count(503)} 503, ledger events {len(served)}, counter {spent}")
