"""`rerank-gateway depth`: the depth advice per team and model, for people and scripts.

It reads what `GET /admin/depth` reads, the counters every replica adds to the shared
Redis (`state.redis_url`), and prices the cuts with the config's price table; latency
comes from the deployments' latency priors, since the live latency models are inside the
gateway processes (`GET /admin/depth` has those). Without Redis each gateway process
keeps its own counts and there is nothing to read from outside.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from gateway.config import Config
from gateway.observe.metrics import Metrics
from gateway.state import redis_client
from gateway.state.catalog import Catalog
from gateway.state.deployments import DeploymentState
from gateway.state.depth import build_depth
from gateway.state.governance import report_teams
from policies.money.pricing import PriceTable
from policies.money.quota import StoreUnavailable

_TIMEOUT_S = 5.0
_COLUMNS = ("team", "model", "mode", "requests", "sends", "needs", "recall", "usd/day", "ms")


def run_depth(config: Config, team: str | None, as_json: bool) -> int:
    if not config.state.redis_url:
        print(
            "depth: this needs state.redis_url: without it each gateway process keeps its own "
            "depth counts (ask it with GET /admin/depth)",
            file=sys.stderr,
        )
        return 1
    teams = report_teams(config)
    if team is not None and team not in teams:
        print(f"depth: unknown team {team!r}; teams: {', '.join(teams)}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_read(config, [team] if team else teams))
    except StoreUnavailable as exc:
        where = redis_client.target(config.state)
        print(f"depth: cannot read Redis at {where and where.describe()}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(table(report))
    return 0


async def _read(config: Config, teams: list[str]) -> dict[str, Any]:
    client = redis_client.connect(config.state, timeout_s=_TIMEOUT_S, retries=2)
    assert client is not None
    try:
        metrics = Metrics()
        catalog = Catalog(config)  # built, not started: its prices and latency priors
        routing = DeploymentState(config, catalog, metrics)
        prices = PriceTable(config.pricing, catalog.deployments)
        book = build_depth(config, catalog, routing, prices, metrics, client, labelled_teams=())
        return await book.report(teams)
    finally:
        await client.aclose()


def table(report: dict[str, Any]) -> str:
    """One line per team and model, then its advice in words."""
    lines = [list(_COLUMNS)]
    notes: list[str] = []
    for row in report["rows"]:
        lines.append(_cells(row))
        notes.append(f"{row['team']} / {row['model']}: {row['message']}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text = [f"depth advice over the last {report['window_hours']} h ({report['scope']})"]
    for line in lines:
        text.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    if not report["rows"]:
        text.append("(no reranked requests counted in this window)")
    return "\n".join([*text, "", *notes])


def _cells(row: dict[str, Any]) -> list[str]:
    sends, recall, saving = row["sends"], row["recall"], row["saving"] or {}
    needs = "-" if row["needs"] is None else str(row["needs"]) + ("" if row["cuts"] else " (all)")
    mode = row["mode"] + (f" at {row['enforced']}" if row["enforced"] else "")
    latency = saving.get("latency_ms_p90")
    return [
        row["team"],
        row["model"],
        mode + (" (reverted)" if row["reverted"] else ""),
        str(row["requests"]),
        f"{sends['mean']:.0f} / {sends['p90']}" if sends["mean"] is not None else "-",
        needs,
        f"{recall['recall']:.3f} ({recall['low']:.3f}-{recall['high']:.3f})" if recall else "-",
        f"{saving['usd_per_day']:.4f}" if saving else "-",
        f"{latency:.0f}" if latency is not None else "-",
    ]
