"""The ledger's SQL against a real PostgreSQL: schema checks, exactly-once batches, rollups,
monthly partitions and retention, and reads that never touch the events table."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import asyncpg
import pytest

from policies.money.ledger_pg import LedgerUnavailable, Month, PostgresLedger, SchemaMismatch
from policies.money.ledger_schema import LATEST
from policies.money.usage_events import (
    REJECTED_BUDGET_KIND,
    SAVED,
    SERVED,
    EventBuffer,
    UsageEvent,
)
from tests.support.postgres import SHARED_DSN, execute

NOV = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
DEC = datetime(2026, 12, 3, 8, 30, tzinfo=UTC).timestamp()


def served(at: float, team: str = "search", key: str = "k1", cost: int = 2_000) -> UsageEvent:
    return UsageEvent(
        at, team, SERVED, key, "rerank-v3.5", "rerank-v3.5", "cohere-a/rerank-v3.5",
        price_kind=1, billed=1, documents=50, search_units=1, tokens=900, calls=1,
        cost_micros=cost,
    )  # fmt: skip


@pytest.fixture
async def ledger(ledger_schema: str) -> PostgresLedger:
    store = PostgresLedger(SHARED_DSN, ledger_schema)
    assert await store.migrate() == [LATEST]
    yield store  # type: ignore[misc]
    await store.close()


async def test_schema_checks_name_what_to_run(ledger_schema: str) -> None:
    store = PostgresLedger(SHARED_DSN, ledger_schema)
    with pytest.raises(SchemaMismatch, match="rerank-gateway ledger migrate"):
        await store.check_schema()  # nothing migrated yet
    assert await store.migrate() == [LATEST]
    assert await store.migrate() == []  # applied once
    await store.check_schema()
    await execute(SHARED_DSN, f"INSERT INTO {ledger_schema}.schema_version VALUES ({LATEST + 1})")
    with pytest.raises(SchemaMismatch, match="newer than this gateway's"):
        await store.check_schema()
    await store.close()


async def test_unreachable_ledger_is_reported_not_raised_raw() -> None:
    store = PostgresLedger("postgresql://postgres@127.0.0.1:9/test", "x", timeout_s=1.0)
    with pytest.raises(LedgerUnavailable):
        await store.schema_version()
    await store.close()


async def test_a_batch_written_twice_counts_once(ledger: PostgresLedger) -> None:
    buffer = EventBuffer(100)
    for i in range(10):
        buffer.add(served(DEC + i))
    buffer.add(UsageEvent(DEC, "search", SAVED, "k1", "rerank-v3.5", "rerank-v3.5",
                          documents=50, cache_hits=40, cache_misses=10, saved_units=1,
                          saved_cost_micros=2_000))  # fmt: skip
    batch = buffer.peek(100)
    assert await ledger.write(batch) == 11
    assert await ledger.write(batch) == 0  # a replay: nothing new
    assert await ledger.write([*batch[:3], (uuid.uuid4().bytes, served(DEC))]) == 1
    (row,) = await ledger.rollups(date(2026, 12, 1), date(2026, 12, 31), None, ["team"])
    assert (row["team"], row["events"], row["requests"]) == ("search", 12, 11)
    assert row["cost_micros"] == 11 * 2_000 and row["search_units"] == 11
    assert (row["cache_hits"], row["saved_cost_micros"]) == (40, 2_000)
    assert row["billed_search_units"] == 11
    count = await execute(SHARED_DSN, f"SELECT count(*) AS n FROM {ledger.schema}.events")
    assert count[0]["n"] == 12


async def test_rollups_group_by_key_model_deployment(ledger: PostgresLedger) -> None:
    buffer = EventBuffer(100)
    buffer.add(served(DEC, key="k1", cost=1_000))
    buffer.add(served(DEC, key="k2", cost=3_000))
    buffer.add(served(DEC, team="ads", key="k9", cost=5_000))
    buffer.add(UsageEvent(DEC, "ads", REJECTED_BUDGET_KIND, "k9", "rerank-v3.5", "rerank-v3.5"))
    await ledger.write(buffer.peek(100))
    dec = (date(2026, 12, 1), date(2026, 12, 31))
    by_key = {
        (r["team"], r["key"]): r["cost_micros"]
        for r in await ledger.rollups(*dec, None, ["team", "key"])
    }
    assert by_key == {("search", "k1"): 1_000, ("search", "k2"): 3_000, ("ads", "k9"): 5_000}
    rows = await ledger.rollups(*dec, ["ads"], ["deployment"])
    assert [(r["deployment"], r["requests"], r["rejected_budget"]) for r in rows] == [
        ("", 0, 1),  # a refusal has no deployment
        ("cohere-a/rerank-v3.5", 1, 0),
    ]
    rows = await ledger.rollups(*dec, ["ads"], ["model"])
    assert [(r["model"], r["requests"], r["rejected_budget"]) for r in rows] == [
        ("rerank-v3.5", 1, 1)
    ]
    async with ledger.snapshot() as snap:
        assert await snap.spent("search", *dec) == 4_000
        assert await snap.spent("nobody", *dec) == 0


async def test_months_are_partitions_and_retention_drops_them_whole(
    ledger: PostgresLedger,
) -> None:
    buffer = EventBuffer(100)
    buffer.add(served(NOV))
    buffer.add(served(DEC))
    await ledger.write(buffer.peek(100))
    names = {f"{table}_{month.suffix()}" for table, month in await ledger.partitions()}
    assert names == {"events_y2026m11", "daily_y2026m11", "events_y2026m12", "daily_y2026m12"}
    # Keep one month of events (December) and every rollup.
    assert await ledger.prune(date(2026, 12, 7), 1, None) == ["events_y2026m11"]
    count = await execute(SHARED_DSN, f"SELECT count(*) AS n FROM {ledger.schema}.events")
    assert count[0]["n"] == 1
    (nov,) = await ledger.rollups(date(2026, 11, 1), date(2026, 11, 30), None, ["team"])
    assert nov["cost_micros"] == 2_000  # the November report outlives its events
    assert await ledger.prune(date(2026, 12, 7), 1, 1) == ["daily_y2026m11"]
    assert Month(2026, 12).next() == Month(2027, 1)


async def test_reports_and_budget_reads_never_touch_the_events_table(
    ledger: PostgresLedger,
) -> None:
    """A role that may read names and rollups only: every read a report, the status page
    or a budget rebuild makes must work as it (a scan of events would be refused)."""
    buffer = EventBuffer(100)
    for i in range(20):
        buffer.add(served(DEC + i, key=f"k{i % 3}"))
    await ledger.write(buffer.peek(100))
    role = f"reader_{uuid.uuid4().hex[:8]}"
    s = ledger.schema
    await execute(SHARED_DSN, f"CREATE ROLE {role} LOGIN")
    try:
        await execute(SHARED_DSN, f"GRANT USAGE ON SCHEMA {s} TO {role}")
        await execute(SHARED_DSN, f"GRANT SELECT ON {s}.names, {s}.daily TO {role}")
        reader = PostgresLedger(f"postgresql://{role}@127.0.0.1:5432/test", s)
        dec = (date(2026, 12, 1), date(2026, 12, 31))
        for by in (["team"], ["team", "key"], ["model", "deployment"], []):
            assert await reader.rollups(*dec, None, by)
        assert (await reader.daily_cost(*dec))["search"][date(2026, 12, 3)] == 40_000
        async with reader.snapshot() as snap:
            assert await snap.spent("search", *dec) == 40_000
        with pytest.raises(LedgerUnavailable, match="permission denied"):
            async with reader.snapshot() as snap:
                await snap.present([uuid.uuid4().bytes], *dec)  # the events table: refused
        await reader.close()
    finally:
        await execute(SHARED_DSN, f"DROP OWNED BY {role}")
        await execute(SHARED_DSN, f"DROP ROLE {role}")


async def test_money_and_counts_are_bigints(ledger: PostgresLedger) -> None:
    """Sums beyond 32 bits stay exact (a month of a busy team)."""
    buffer = EventBuffer(10)
    for _ in range(3):
        buffer.add(served(DEC, cost=2_000_000_000))
    await ledger.write(buffer.peek(10))
    (row,) = await ledger.rollups(date(2026, 12, 1), date(2026, 12, 31), None, ["team"])
    assert row["cost_micros"] == 6_000_000_000


async def test_ids_are_stable_per_event(ledger: PostgresLedger) -> None:
    buffer = EventBuffer(10, prefix=b"\x01" * 8)
    buffer.add(served(DEC))
    ((event_id, _),) = buffer.peek(1)
    assert event_id == b"\x01" * 8 + (1).to_bytes(8, "big")
    await ledger.write(buffer.peek(1))
    async with ledger.snapshot() as snap:
        found = await snap.present([event_id, b"\x02" * 16], date(2026, 12, 3), date(2026, 12, 3))
    assert found == {event_id}
    with pytest.raises(asyncpg.PostgresError):  # the table refuses a second row of that id
        await execute(
            SHARED_DSN,
            f"INSERT INTO {ledger.schema}.events SELECT * FROM {ledger.schema}.events",
        )
