"""`rerank-gateway usage`: the usage report for people and for finance.

It reads what `GET /admin/usage` reads: the usage ledger (PostgreSQL) when `ledger` is
configured, otherwise the daily counters in the shared Redis. With `limits.limits_backend:
memory` and no ledger, usage lives inside each gateway process and there is nothing to
read from outside.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import date
from typing import Any

import orjson

from gateway.config import Config
from gateway.http.admin import report_csv
from gateway.state import redis_client
from gateway.state.governance import report_teams
from gateway.state.usage_reports import UsageReports
from policies.money.ledger_pg import LedgerUnavailable, PostgresLedger
from policies.money.quota import StoreUnavailable
from policies.money.redis_usage import RedisUsageStore
from policies.money.usage import (
    REJECTED_BUDGET,
    REJECTED_LIMITS,
    REJECTED_RATE,
    month_range,
    parse_groups,
    report_range,
)

_COLUMNS = (
    ("requests", "requests"),
    ("documents", "documents"),
    ("search_units", "units"),
    ("cost_usd", "cost_usd"),
    ("tokens", "tokens"),
    ("unit", "billed_in"),
    ("billed_units", "billed"),
    ("cache_hits", "cached_docs"),
    ("replayed", "replayed"),
    ("saved_search_units", "saved_units"),
    ("saved_cost_usd", "saved_usd"),
    ("rejected", "rejected"),
    ("truncated", "truncated"),
    ("downgraded", "downgraded"),
)
_TIMEOUT_S = 5.0


def run_usage(
    config: Config,
    team: str | None,
    start: str | None,
    end: str | None,
    *,
    month: str | None = None,
    by: str | None = None,
    output: str = "table",
) -> int:
    if config.ledger is None and (
        config.limits.limits_backend != "redis" or not config.state.redis_url
    ):
        print(
            "usage: this needs Redis or the usage ledger: with limits.limits_backend `memory` "
            "and no ledger each gateway process keeps its own figures (ask it with "
            "GET /admin/usage); configure `ledger`, or state.redis_url and "
            "limits.limits_backend: redis",
            file=sys.stderr,
        )
        return 1
    teams = report_teams(config)
    if team is not None and team not in teams:
        print(f"usage: unknown team {team!r}; teams: {', '.join(teams)}", file=sys.stderr)
        return 2
    try:
        if month and (start or end):
            raise ValueError("give either --month or --from/--to, not both")
        first, last = month_range(month) if month else report_range(start, end, time.time())
        groups = parse_groups(by)
        report = asyncio.run(_read(config, [team] if team else teams, first, last, groups))
    except ValueError as exc:
        print(f"usage: {exc}", file=sys.stderr)
        return 2
    except (StoreUnavailable, LedgerUnavailable) as exc:
        print(f"usage: cannot read {_source(config)}: {exc}", file=sys.stderr)
        return 1
    if output == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    elif output == "csv":
        print(report_csv(report), end="")
    else:
        print(table(report))
    return 0


def _source(config: Config) -> str:
    if config.ledger is not None:
        return f"the usage ledger (schema {config.ledger.schema})"
    where = redis_client.target(config.state)
    return f"Redis at {where and where.describe()}"


async def _read(
    config: Config, teams: list[str], first: date, last: date, by: tuple[str, ...]
) -> dict[str, Any]:
    if config.ledger is not None:
        ledger = PostgresLedger(
            config.ledger.url, config.ledger.schema, timeout_s=config.ledger.timeout_s
        )
        try:
            reports = UsageReports(teams, time.time, ledger=ledger)
            return await reports.report(teams, first, last, by)
        finally:
            await ledger.close()
    client = redis_client.connect(config.state, timeout_s=_TIMEOUT_S, retries=2)
    assert client is not None
    try:
        store = RedisUsageStore(
            client, config.limits.redis_prefix, config.limits.usage_retention_days
        )
        reports = UsageReports(teams, time.time, store=store, shared=True)
        return await reports.report(teams, first, last, by)
    finally:
        await client.aclose()


def table(report: dict[str, Any]) -> str:
    """A plain text table: one line per team/model/deployment, then a total per team."""
    groups = list(report.get("group_by") or ["team", "model", "deployment"])
    lines = [[*groups, *(label for _, label in _COLUMNS)]]
    for row in report["rows"]:
        lines.append([row.get(g) or "-" for g in groups] + _cells(row))
    for team, total in report["totals"].items():
        lines.append(([team, "TOTAL"] + [""] * len(groups))[: len(groups)] + _cells(total))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [f"usage from {report['from']} to {report['to']} (UTC days, USD)"]
    for line in lines:
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i < len(groups) else c.rjust(w) for i, (c, w) in pairs]
        text.append("  ".join(cells).rstrip())
    if not report["rows"]:
        text.append("(no usage recorded in this period)")
    return "\n".join(text)


def _billed(figures: dict[str, Any]) -> str:
    """The figure the row was billed by; `-` for totals, events and mixed rows."""
    if figures.get("unit") is None or figures.get("billed_units") is None:
        return "-"
    return str(figures["billed_units"])


def _cells(figures: dict[str, Any]) -> list[str]:
    figures = {
        **figures,
        "rejected": sum(figures[k] for k in (REJECTED_LIMITS, REJECTED_RATE, REJECTED_BUDGET)),
        "unit": figures.get("unit") or "-",
        "billed_units": _billed(figures),
    }
    return [
        f"{figures[key]:.4f}" if key.endswith("_usd") else str(figures[key]) for key, _ in _COLUMNS
    ]
