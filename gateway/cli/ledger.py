"""`rerank-gateway ledger migrate|status|prune`: the usage ledger's schema and retention.

`migrate` applies the schema migrations the database lacks (a gateway refuses to start
against a schema older or newer than its own); `status` prints the schema version, the
partitions and the space they take; `prune` drops the months past the configured
retention now (a running gateway also does it once an hour).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

from gateway.config import Config
from policies.money.ledger_pg import LedgerUnavailable, PostgresLedger, SchemaMismatch
from policies.money.ledger_schema import LATEST

LEDGER_SECTIONS = ("ledger", "auth", "teams", "state")  # no provider secret is read


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ledger = sub.add_parser("ledger", help="the usage ledger: migrate, status, prune")
    ledger.add_argument("action", choices=("migrate", "status", "prune"))
    ledger.add_argument("--config", required=True, help="the gateway's YAML config file")


def run_ledger(args: argparse.Namespace, config: Config) -> int:
    if config.ledger is None:
        print("ledger: the config has no `ledger` section", file=sys.stderr)
        return 2
    settings = config.ledger
    store = PostgresLedger(settings.url, settings.schema, timeout_s=settings.timeout_s)
    try:
        return asyncio.run(_run(args.action, store, config))
    except (LedgerUnavailable, SchemaMismatch) as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 1


async def _run(action: str, store: PostgresLedger, config: Config) -> int:
    assert config.ledger is not None
    try:
        if action == "migrate":
            applied = await store.migrate()
            done = ", ".join(map(str, applied)) if applied else "nothing to apply"
            print(f"ledger schema {store.schema!r} at version {LATEST} ({done})")
            return 0
        if action == "prune":
            today = datetime.fromtimestamp(time.time(), UTC).date()
            dropped = await store.prune(
                today, config.ledger.event_retention_months, config.ledger.rollup_retention_months
            )
            print("dropped: " + (", ".join(dropped) if dropped else "nothing"))
            return 0
        version = await store.schema_version()
        print(f"schema {store.schema!r}: version {version} (this gateway writes {LATEST})")
        if version:
            sizes = await store.storage()
            per_event = sizes["events_bytes"] / sizes["events"] if sizes["events"] else 0.0
            print(
                f"events: {sizes['events']:,} ({sizes['events_bytes']:,} bytes with indexes, "
                f"{per_event:.0f} bytes/event); rollups: {sizes['daily_bytes']:,} bytes"
            )
            for table, month in await store.partitions():
                print(f"  {table}_{month.suffix()}")
        return 0 if version == LATEST else 1
    finally:
        await store.close()
