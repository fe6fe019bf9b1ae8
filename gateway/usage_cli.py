"""`rerank-gateway usage`: the usage report for humans, read from the shared Redis store.

It reads the same buckets as `GET /admin/usage`. With `limits.limits_backend: memory`
usage lives inside each gateway process, so there is nothing to read from outside.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import date
from typing import Any

import orjson

from gateway.config import Config
from gateway.state import redis_client
from gateway.state.governance import report_teams
from policies.quota import StoreUnavailable
from policies.redis_usage import RedisUsageStore
from policies.usage import REJECTED_BUDGET, REJECTED_LIMITS, REJECTED_RATE, collect, report_range

_COLUMNS = (
    ("requests", "requests"),
    ("documents", "documents"),
    ("search_units", "units"),
    ("cost_usd", "cost_usd"),
    ("tokens", "tokens"),
    ("unit", "billed_in"),
    ("billed_units", "billed"),
    ("saved_search_units", "saved_units"),
    ("saved_cost_usd", "saved_usd"),
    ("rejected", "rejected"),
    ("truncated", "truncated"),
    ("downgraded", "downgraded"),
)
_TIMEOUT_S = 5.0


def run_usage(
    config: Config, team: str | None, start: str | None, end: str | None, *, as_json: bool = False
) -> int:
    if config.limits.limits_backend != "redis" or not config.state.redis_url:
        print(
            "usage: this needs Redis: with limits.limits_backend `memory` each gateway process "
            "keeps its own figures (ask it with GET /admin/usage); set state.redis_url and "
            "limits.limits_backend: redis to share and report them",
            file=sys.stderr,
        )
        return 1
    teams = report_teams(config)
    if team is not None and team not in teams:
        print(f"usage: unknown team {team!r}; teams: {', '.join(teams)}", file=sys.stderr)
        return 2
    try:
        first, last = report_range(start, end, time.time())
    except ValueError as exc:
        print(f"usage: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_read(config, [team] if team else teams, first, last))
    except StoreUnavailable as exc:
        where = redis_client.target(config.state)
        print(f"usage: cannot read Redis at {where and where.describe()}: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else table(report))
    return 0


async def _read(config: Config, teams: list[str], first: date, last: date) -> dict[str, Any]:
    assert config.state.redis_url is not None
    client = redis_client.connect(config.state, timeout_s=_TIMEOUT_S, retries=2)
    assert client is not None
    try:
        store = RedisUsageStore(
            client, config.limits.redis_prefix, config.limits.usage_retention_days
        )
        return await collect(store, teams, first, last)
    finally:
        await client.aclose()


def table(report: dict[str, Any]) -> str:
    """A plain text table: one line per team/model/deployment, then a total per team."""
    lines = [["team", "model", "deployment", *(label for _, label in _COLUMNS)]]
    for row in report["rows"]:
        lines.append([row["team"], row["model"], row["deployment"] or "-", *_cells(row)])
    for team, total in report["totals"].items():
        lines.append([team, "TOTAL", "", *_cells(total)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [f"usage from {report['from']} to {report['to']} (UTC days, USD)"]
    for line in lines:
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in pairs]
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
