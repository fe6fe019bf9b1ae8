"""The ledger when PostgreSQL is not there: the gateway keeps serving, holds the events
(bounded, counted when it cannot), writes them when PostgreSQL returns, and at exit writes
or spills what it holds. Nothing is lost silently, nothing counted twice."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import TEAM_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.calls import post
from tests.support.governance import governed, metrics_text
from tests.support.ledger import BODY, events, ledger_section, migrate, wait_for
from tests.support.paths import ROOT
from tests.support.postgres import OwnPostgres, execute
from tests.support.processes import GatewayProcess
from tests.support.servers import ServerLoop, free_port

OUTAGE_S = 30.0


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found[1])


async def ids_once(dsn: str, schema: str) -> tuple[int, int]:
    """(events, distinct ids) in the ledger."""
    (row,) = await execute(
        dsn, f"SELECT count(*) AS n, count(DISTINCT id) AS ids FROM {schema}.events"
    )
    return row["n"], row["ids"]


async def test_postgres_down_for_30_s_under_load_loses_and_doubles_nothing(
    own_postgres: OwnPostgres, servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeCohere()
    schema = "ledger"
    await migrate(own_postgres.dsn, schema)
    data = governed({"cohere-a": servers.serve(fake.app())})
    data["ledger"] = ledger_section(own_postgres.dsn, schema, timeout_s=1.0)
    url = start_gateway(data)
    answered = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal answered
        i = 0
        while not stop.is_set():
            status = (await post(url, {**BODY, "query": f"q{i}"}, TEAM_KEY))[0]
            assert status == 200  # the outage never reaches a caller
            answered += 1
            i += 1
            await asyncio.sleep(0.01)

    loader = asyncio.create_task(load())
    await wait_for(lambda: _at_least(lambda: answered, 50), "load under way")
    own_postgres.stop()
    down_at, peak_buffered, peak_age = time.monotonic(), 0.0, 0.0
    while time.monotonic() - down_at < OUTAGE_S:
        text = await metrics_text(url)
        peak_buffered = max(peak_buffered, gauge(text, "rerank_ledger_buffered_events"))
        peak_age = max(peak_age, gauge(text, "rerank_ledger_oldest_event_age_seconds"))
        await asyncio.sleep(0.5)
    during = answered
    own_postgres.start()
    await wait_for(lambda: _at_least(lambda: answered, during + 50), "load after the outage")
    stop.set()
    await loader
    found = await wait_for(
        lambda: _when(ids_once(own_postgres.dsn, schema), lambda f: f[0] == answered),
        f"{answered} events in the ledger",
        timeout=30,
    )
    assert found == (answered, answered)  # every answered request once, none twice
    assert len(fake.calls) == answered
    print(f"\nledger, PostgreSQL down {OUTAGE_S:.0f} s under load: {answered} answered, "
          f"{found[0]} events, {found[1]} ids; buffer peak {peak_buffered:.0f} events, "
          f"oldest {peak_age:.1f} s")  # fmt: skip
    assert peak_buffered > 100 and peak_age > OUTAGE_S / 2  # the buffer rose...
    text = await metrics_text(url)
    assert gauge(text, "rerank_ledger_buffered_events") == 0  # ...and fell
    assert gauge(text, "rerank_ledger_oldest_event_age_seconds") == 0
    assert gauge(text, "rerank_ledger_events_dropped_total") == 0
    assert gauge(text, "rerank_ledger_write_errors_total") > 0


async def test_a_full_buffer_drops_only_what_it_counts(
    own_postgres: OwnPostgres, servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeCohere()
    await migrate(own_postgres.dsn, "ledger")
    data = governed({"cohere-a": servers.serve(fake.app())})
    data["ledger"] = ledger_section(own_postgres.dsn, "ledger", max_buffered=100, timeout_s=1.0)
    url = start_gateway(data)
    own_postgres.stop()
    for i in range(150):
        assert (await post(url, {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
    text = await metrics_text(url)
    assert gauge(text, "rerank_ledger_events_dropped_total") == 50
    assert 'rerank_operator_events_total{event="ledger_buffer_full"} 50.0' in text
    own_postgres.start()
    found = await wait_for(
        lambda: _when(events(own_postgres.dsn, "ledger"), lambda e: e.get(1) == 100),
        "the buffered hundred",
        timeout=30,
    )
    assert found == {1: 100}


def process_config(tmp_path: Path, upstream: str, ledger: dict[str, Any]) -> Path:
    data = governed({"cohere-a": upstream})
    data["ledger"] = ledger
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_sigterm_under_load_writes_every_answered_request(
    ledger_schema: str, servers: ServerLoop, tmp_path: Path
) -> None:
    from tests.support.postgres import SHARED_DSN

    fake = FakeCohere()
    await migrate(SHARED_DSN, ledger_schema)
    # Events are written every 30 s only: at SIGTERM they are all still buffered.
    slow = ledger_section(SHARED_DSN, ledger_schema, flush_interval_s=10.0, rebuild_wait_s=10.0)
    config = process_config(tmp_path, servers.serve(fake.app()), slow)
    port = free_port()
    gateway = GatewayProcess("--config", str(config), "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    gateway.wait_ready(url)
    answered = 0

    async def client(worker: int) -> None:
        nonlocal answered
        for i in range(1000):
            try:
                status = (await post(url, {**BODY, "query": f"{worker}-{i}"}, TEAM_KEY))[0]
            except OSError:  # stopped listening: the drain has begun
                return
            if status != 200:
                return
            answered += 1

    clients = [asyncio.create_task(client(w)) for w in range(8)]
    await wait_for(lambda: _at_least(lambda: answered, 200), "load under way")
    gateway.signal(signal.SIGTERM)
    await asyncio.gather(*clients, return_exceptions=True)
    assert await asyncio.to_thread(gateway.proc.wait, 30) == 0
    assert (await events(SHARED_DSN, ledger_schema)).get(1) == answered
    assert (await ids_once(SHARED_DSN, ledger_schema))[1] == answered
    print(f"\nledger, SIGTERM under load: {answered} answered, all {answered} in the ledger")


async def test_postgres_down_at_exit_spills_to_a_file_replayed_once(
    own_postgres: OwnPostgres, servers: ServerLoop, tmp_path: Path
) -> None:
    fake = FakeCohere()
    await migrate(own_postgres.dsn, "ledger")
    spill = tmp_path / "spill"
    settings = ledger_section(own_postgres.dsn, "ledger", spill_dir=str(spill), timeout_s=1.0)
    config = process_config(tmp_path, servers.serve(fake.app()), settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = GatewayProcess("--config", str(config), "--port", str(port))
    first.wait_ready(url)
    own_postgres.stop()
    for i in range(40):
        assert (await post(url, {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] == 200
    first.signal(signal.SIGTERM)
    spilled = await asyncio.to_thread(first.wait_event, "ledger_events_spilled", 60)
    assert spilled["events"] == 40
    assert await asyncio.to_thread(first.proc.wait, 30) == 0
    assert len(list(spill.glob("ledger-spill-*.jsonl"))) == 1
    own_postgres.start()
    second = GatewayProcess("--config", str(config), "--port", str(port))
    second.wait_ready(url)
    replayed = await asyncio.to_thread(second.wait_event, "ledger_spill_replayed")
    assert replayed["events"] == 40
    found = await wait_for(
        lambda: _when(ids_once(own_postgres.dsn, "ledger"), lambda f: f[0] == 40),
        "the spilled events",
    )
    assert found == (40, 40)
    assert not list(spill.iterdir())  # written: the claimed file is gone
    second.stop()


def test_a_gateway_refuses_a_schema_it_does_not_write(
    ledger_schema: str, tmp_path: Path
) -> None:
    """Unmigrated: start refused, naming the command; migrated: starts; newer: refused."""
    from tests.support.postgres import SHARED_DSN

    config = process_config(tmp_path, "http://127.0.0.1:9", ledger_section(SHARED_DSN, ledger_schema))

    def serve() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    refused = serve()
    assert refused.returncode == 1
    assert "rerank-gateway ledger migrate --config FILE" in refused.stdout
    migrated = subprocess.run(
        [sys.executable, "-m", "gateway", "ledger", "migrate", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert f"ledger schema '{ledger_schema}' at version 1 (1)" in migrated.stdout
    status = subprocess.run(
        [sys.executable, "-m", "gateway", "ledger", "status", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0 and "version 1 (this gateway writes 1)" in status.stdout
    asyncio.run(execute(SHARED_DSN, f"INSERT INTO {ledger_schema}.schema_version VALUES (99)"))
    newer = serve()
    assert newer.returncode == 1 and "newer than this gateway's" in newer.stdout


async def _at_least(value: Callable[[], int], target: int) -> bool:
    return value() >= target


async def _when(found: Any, condition: Callable[[Any], bool]) -> Any:
    value = await found
    return value if condition(value) else None
