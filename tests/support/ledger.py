"""Helpers for the ledger tests: the `ledger` config section, a migrated schema, and
waiting (for a condition, with a bound) until events have landed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from policies.money.ledger_pg import PostgresLedger
from tests.support.postgres import execute

BODY = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "bananas"]}
UNIT_MICROS = 2_000  # one search unit of rerank-v3.5 at $2.00 per 1,000


def ledger_section(dsn: str, schema: str, **settings: Any) -> dict[str, Any]:
    """Fast flushes and a short rebuild wait, so the tests wait for little."""
    return {"url": dsn, "schema": schema, "flush_interval_s": 0.05, "rebuild_wait_s": 0.3,
            "timeout_s": 2.0, **settings}  # fmt: skip


async def migrate(dsn: str, schema: str) -> None:
    store = PostgresLedger(dsn, schema)
    await store.migrate()
    await store.close()


async def events(dsn: str, schema: str) -> dict[int, int]:
    """Events in the ledger, by kind."""
    rows = await execute(
        dsn, f"SELECT kind, count(*) AS n FROM {schema}.events GROUP BY kind"
    )
    return {row["kind"]: row["n"] for row in rows}


async def served_events(dsn: str, schema: str) -> list[dict[str, Any]]:
    rows = await execute(
        dsn,
        f"SELECT e.id, e.cost_micros, d.name AS deployment, k.name AS key, t.name AS team "
        f"FROM {schema}.events e JOIN {schema}.names d ON d.id = e.deployment "
        f"JOIN {schema}.names k ON k.id = e.key JOIN {schema}.names t ON t.id = e.team "
        "WHERE e.kind = 1",
    )
    return [dict(row) for row in rows]


async def wait_for(condition: Any, what: str, timeout: float = 20.0) -> Any:
    """Await `condition()` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {found!r})")
        await asyncio.sleep(0.05)
