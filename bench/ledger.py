"""The usage ledger at size: a month of synthetic events loaded with COPY, then the reads
people make of it, timed; bytes per event on disk; and what recording costs a request.

`make bench ARGS="--scenarios ledger"` (opt-in: loading 10 M events takes minutes).
`--ledger-events N` sets the size, `--ledger-dsn` the database (default the local `test`
database; the bench works in a schema of its own and drops it afterwards).

The events are spread over the days of one month, 20 teams, 200 keys, 4 models and 6
deployments, with the kinds in a busy gateway's proportions (mostly billed jobs, some
cache savings and refusals). Rollups are built once from the loaded events with the same
expressions the write path uses, as they would have landed batch by batch.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from gateway.config.model import LedgerConfig
from gateway.observe.metrics import Metrics
from gateway.state.usage import Payer, UsageRecorder
from gateway.state.usage_ledger import UsageLedger
from policies.money.billing import BillingRules
from policies.money.ledger_pg import Month, PostgresLedger, rollup_select
from policies.money.pricing import PriceTable, PricingConfig, Usage
from policies.money.usage_events import SERVED, UsageEvent

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MONTH = Month(2026, 11)
TEAMS, KEYS, MODELS, DEPLOYMENTS = 20, 200, 4, 6


async def run(dsn: str, events: int) -> dict[str, Any]:
    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    store = PostgresLedger(dsn, schema, timeout_s=600.0)
    conn = await asyncpg.connect(dsn)
    try:
        await store.migrate()
        await store.ensure_months([MONTH])
        ids = await _names(conn, schema)
        loaded = time.perf_counter()
        await _copy(conn, schema, ids, events)
        load_s = time.perf_counter() - loaded
        rolled = time.perf_counter()
        await conn.execute(rollup_select(schema))
        rollup_s = time.perf_counter() - rolled
        await conn.execute(f"ANALYZE {schema}.events, {schema}.daily")
        sizes = await store.storage()
        first = MONTH.start()
        last = MONTH.next().start() - timedelta(days=1)
        reads = {
            "monthly report, one team (by model, deployment)": lambda: store.rollups(
                first, last, ["team-3"], ["team", "model", "deployment"]
            ),
            "monthly report, all teams (by team)": lambda: store.rollups(
                first, last, None, ["team"]
            ),
            "monthly report, all teams (by team, key)": lambda: store.rollups(
                first, last, None, ["team", "key"]
            ),
            "status page: cost per team and day": lambda: store.daily_cost(first, last),
            "budget rebuild: one team's month": lambda: _spent(store, first, last),
        }
        timings = {name: await _best(read) for name, read in reads.items()}
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
        await store.close()
    return {
        "events": sizes["events"],
        "load_s": round(load_s, 1),
        "rollup_build_s": round(rollup_s, 1),
        "events_bytes": sizes["events_bytes"],
        "bytes_per_event": round(sizes["events_bytes"] / max(1, sizes["events"]), 1),
        "rollup_bytes": sizes["daily_bytes"],
        "reads_ms": timings,
        "request_path_us": await request_path_cost(),
    }


async def _names(conn: asyncpg.Connection, schema: str) -> dict[str, list[int]]:
    groups = {
        "team": [f"team-{i}" for i in range(TEAMS)],
        "key": [f"key-{i}" for i in range(KEYS)],
        "model": [f"model-{i}" for i in range(MODELS)],
        "deployment": [f"deployment-{i}" for i in range(DEPLOYMENTS)],
    }
    names = [n for values in groups.values() for n in values]
    await conn.execute(
        f"INSERT INTO {schema}.names (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        names,
    )
    rows = await conn.fetch(f"SELECT id, name FROM {schema}.names")
    found = {row["name"]: row["id"] for row in rows}
    return {group: [found[n] for n in values] for group, values in groups.items()}


async def _copy(
    conn: asyncpg.Connection, schema: str, ids: dict[str, list[int]], events: int
) -> None:
    """COPY `events` rows into the month's partition, in chunks."""
    rng = random.Random(7)
    start = datetime(MONTH.year, MONTH.month, 1, tzinfo=UTC)
    seconds = (datetime(2026, 12, 1, tzinfo=UTC) - start).total_seconds()
    columns = (
        "at", "id", "tokens", "cost_micros", "saved_tokens", "saved_cost_micros", "team",
        "key", "asked", "served", "deployment", "documents", "search_units", "cache_hits",
        "cache_misses", "saved_units", "kind", "price_kind", "calls",
    )  # fmt: skip
    chunk = 200_000
    for offset in range(0, events, chunk):
        rows = []
        for i in range(offset, min(events, offset + chunk)):
            kind = rng.choices((1, 2, 4, 5), weights=(80, 15, 3, 2))[0]
            team = ids["team"][i % TEAMS]
            key = ids["key"][(i * 7) % KEYS]
            model = ids["model"][i % MODELS]
            deployment = ids["deployment"][i % DEPLOYMENTS] if kind == 1 else 0
            billed = kind == 1
            rows.append((
                start + timedelta(seconds=rng.random() * seconds), uuid.UUID(int=i + 1),
                900 if billed else 0, 2_000 if billed else 0, 0, 2_000 if kind == 2 else 0,
                team, key, model, model, deployment, 50 if billed else 0, 1 if billed else 0,
                40 if kind == 2 else 0, 10 if kind == 2 else 0, 1 if kind == 2 else 0, kind,
                1 if billed else 0, 1 if billed else 0,
            ))  # fmt: skip
        await conn.copy_records_to_table(
            f"events_{MONTH.suffix()}", schema_name=schema, records=rows, columns=columns
        )


async def _spent(store: PostgresLedger, first: date, last: date) -> int:
    async with store.snapshot() as snap:
        return await snap.spent("team-3", first, last)


async def _best(read: Any, rounds: int = 5) -> float:
    """The best of `rounds` runs, milliseconds (the first warms the cache)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        await read()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


async def request_path_cost(calls: int = 200_000) -> dict[str, float]:
    """Microseconds a request spends on its usage record with a ledger: building the
    event and buffering it (no I/O), for a billed job and for a cache saving."""
    metrics = Metrics()
    settings = LedgerConfig(url="postgresql://unused@127.0.0.1:1/x", max_buffered=calls + 1)
    ledger = UsageLedger(settings, metrics)
    prices = PriceTable(PricingConfig(), {})
    recorder = UsageRecorder(prices, BillingRules(), metrics, time.time, ledger=ledger)
    payer, usage = Payer("search", "config:0123abcd", "rerank-v3.5"), Usage(1, 900, 1)
    documents = ["a short document of some thirty words"] * 50
    started = time.perf_counter()
    for _ in range(calls):
        await recorder.served(payer, "rerank-v3.5", "cohere-a/rerank-v3.5", 50, usage, 2_000)
    served_us = (time.perf_counter() - started) / calls * 1e6
    ledger.buffer.discard(len(ledger.buffer))
    sent = documents[:10]
    started = time.perf_counter()
    for _ in range(calls // 10):
        await recorder.saved(payer, "rerank-v3.5", "query", documents, sent, None, hits=40)
    saved_us = (time.perf_counter() - started) / (calls // 10) * 1e6
    ledger.buffer.discard(len(ledger.buffer))
    # The ledger's own share: the event and its buffering (the rest of a billed job's
    # recording, its Prometheus counters and price lookup, is there with or without it).
    started = time.perf_counter()
    for _ in range(calls):
        ledger.add(
            UsageEvent(time.time(), "search", SERVED, "config:0123abcd", "rerank-v3.5",
                       "rerank-v3.5", "cohere-a/rerank-v3.5", price_kind=1, billed=1,
                       documents=50, search_units=1, tokens=900, calls=1, cost_micros=2_000)
        )  # fmt: skip
    event_us = (time.perf_counter() - started) / calls * 1e6
    return {
        "billed job, all its recording": round(served_us, 2),
        "of which the ledger (event, buffer)": round(event_us, 2),
        "cache saving (50 documents)": round(saved_us, 2),
    }


def run_ledger(dsn: str, events: int) -> dict[str, Any]:
    print(f"ledger: loading {events:,} events with COPY into {dsn} ...", flush=True)
    return asyncio.run(run(dsn, events))


def print_ledger(result: dict[str, Any]) -> None:
    print(
        f"\nledger: {result['events']:,} events loaded in {result['load_s']} s "
        f"(rollups built in {result['rollup_build_s']} s); "
        f"{result['bytes_per_event']} bytes per event with indexes "
        f"({result['events_bytes'] / 1e9:.2f} GB), rollups {result['rollup_bytes'] / 1e6:.1f} MB"
    )
    for name, ms in result["reads_ms"].items():
        print(f"  {name:<50} {ms:>9.2f} ms")
    for name, us in result["request_path_us"].items():
        print(f"  request path, {name:<36} {us:>9.2f} us")
