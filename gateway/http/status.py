"""The status page, `GET /admin/status`: what a person wants to see at a glance.

Deployments (breaker state, error rate, p50/p90, in flight), each team's spend today
and this month against its budget, refusals, cache savings, tier choices, the depth
advice per team and model, and the gateway itself (version, uptime, worker, Redis).
Server-rendered HTML with inline CSS, no script, no build step and nothing fetched from
elsewhere; it reloads itself every few seconds (`<meta http-equiv="refresh">`).
`GET /admin/status.json` has the same data.

Admin only. A browser signs in through a form with the admin key, which opens a
server-side session (gateway.state.admin_sessions): the cookie holds the session's random
token, never the key; it is HTTP-only, SameSite=Strict and Secure unless the page is served
over plain HTTP on a loopback address. Scripts send `Authorization: Bearer <admin key>`
instead. Each worker process answers from its own
routing state (breakers are per process) and the shared stores (usage in Redis when
limits live there; metrics across workers); the page says which worker answered.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from aiohttp import web

from gateway.config import Config
from gateway.http.admin_types import (
    AgreementRow,
    CacheStatus,
    Deployments,
    DepthPanel,
    DepthRow,
    StatusReport,
    TeamStatus,
    TierChoice,
)
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import version
from gateway.state import redis_client
from gateway.state.deployments import DeploymentState
from gateway.state.depth import DepthBook
from gateway.state.usage_reports import UsageReports
from policies.money.budget import usd
from policies.money.ledger_pg import LedgerUnavailable
from policies.money.quota import StoreUnavailable
from policies.money.usage import (
    COST,
    REJECTED_BUDGET,
    REJECTED_RATE,
    REQUESTS,
    SAVED_COST,
    SAVED_UNITS,
    SEARCH_UNITS,
)

COOKIE = "rg_session"  # the session's token (until 2026 `rg_admin` held the admin key)
REFRESH_S = 5
_REDIS_TIMEOUT_S = 0.5


def cookie_secure(request: web.Request) -> bool:
    """Secure, unless this connection is plain HTTP to a loopback address of the gateway
    (a browser drops a Secure cookie there). Over TLS, behind a proxy that says it served
    HTTPS, and on any other address, the cookie is Secure."""
    if request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        return True
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return not (isinstance(local, tuple) and is_loopback_address(str(local[0])))


def is_loopback_address(host: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6 (a dual-stack listener)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


async def collect(
    config: Config,
    deployments: DeploymentState,
    reports: UsageReports | None,
    metrics: Metrics,
    redis: redis_client.Client | None,
    started: float,
    draining: bool = False,
    shadow: Mapping[str, Any] | None = None,
    depth: tuple[DepthBook, list[str]] | None = None,
) -> StatusReport:
    """Everything the page shows, as plain data (also served as JSON); `shadow` is the
    shadow evaluation's report (GET /admin/tiers), when an alias is shadowed; `depth`
    the depth advice's book and whose advice to show."""
    now = time.time()
    snapshot = cast(Deployments, deployments.snapshot())  # described in admin_types
    return {
        "gateway": {
            "version": version(),
            "uptime_s": round(now - started, 1),
            "worker_pid": os.getpid(),
            "workers": config.server.workers,
            "draining": draining,
            "redis": await _redis_status(redis),
            "generated_at": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "deployments": snapshot["deployments"],
        "retry_budget": snapshot["retry_budget"],
        "teams": await _teams(config, reports, now),
        "usage_scope": reports.scope if reports is not None else "this process",
        "cache": _cache(metrics),
        "tiers": _tiers(metrics),
        "agreement": _agreement(shadow),
        "depth": await _depth(depth),
    }


async def _depth(depth: tuple[DepthBook, list[str]] | None) -> DepthPanel:
    """The depth advice as GET /admin/depth has it (without adding this process's newest
    counts first: the page reads, it does not write)."""
    if depth is None:
        return {"scope": "this process", "rows": []}
    book, teams = depth
    try:
        return cast(DepthPanel, await book.report(teams))  # as gateway.state.depth builds it
    except (StoreUnavailable, LedgerUnavailable):
        return {"scope": book.scope, "rows": [], "error": f"depth store ({book.scope}) unreachable"}


def _agreement(report: Mapping[str, Any] | None) -> list[AgreementRow]:
    """One row per alias, team and direction of the shadow evaluation's windows."""
    rows: list[AgreementRow] = []
    for alias, entry in sorted(((report or {}).get("aliases") or {}).items()):
        for team, directions in sorted(entry.get("teams", {}).items()):
            for direction, summary in sorted(directions.items()):
                if not isinstance(summary, Mapping):
                    continue  # the guard's state, shown on the fast_quality row
                rows.append(
                    {
                        "alias": alias,
                        "team": team,
                        "direction": direction,
                        "samples": summary.get("samples", 0),
                        "ndcg_mean": summary.get("ndcg_mean"),
                        "ndcg_p10": summary.get("ndcg_p10"),
                        "downgrades": directions.get("downgrades", "")
                        if direction == "fast_quality"
                        else "",
                    }
                )
    return rows


async def _redis_status(redis: redis_client.Client | None) -> str:
    if redis is None:
        return "not configured"
    try:
        await asyncio.wait_for(redis.ping(), _REDIS_TIMEOUT_S)
        return "ok"
    except (aioredis.RedisError, OSError, TimeoutError) as exc:
        return f"unreachable ({exc.__class__.__name__})"


async def _teams(
    config: Config, reports: UsageReports | None, now: float
) -> dict[str, TeamStatus]:
    if reports is None:
        return {}
    today = datetime.fromtimestamp(now, UTC).date()
    first = today.replace(day=1)
    month = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    teams: dict[str, TeamStatus] = {}
    try:
        by_day = await reports.daily_cost(first, today)
    except (StoreUnavailable, LedgerUnavailable):
        by_day = {}
    for team in reports.teams:
        try:
            day_counts = await reports.team_totals(team, [today])
            month_counts = await reports.team_totals(team, month)
        except (StoreUnavailable, LedgerUnavailable):
            teams[team] = {"error": f"usage {reports.scope} unreachable"}
            continue
        team_config = config.teams.get(team)
        budget = team_config.budget if team_config is not None else None
        billed, saved = month_counts[SEARCH_UNITS], month_counts[SAVED_UNITS]
        daily = by_day.get(team, {})
        teams[team] = {
            "spent_today_usd": round(usd(day_counts[COST]), 6),
            "spent_month_usd": round(usd(month_counts[COST]), 6),
            "budget_day_usd": budget.usd_per_day if budget else None,
            "budget_month_usd": budget.usd_per_month if budget else None,
            "requests_today": day_counts[REQUESTS],
            "rate_limited_today": day_counts[REJECTED_RATE],
            "budget_refused_today": day_counts[REJECTED_BUDGET],
            # Share of the month's search units answered by the cache instead of upstream.
            "cache_share_month": round(saved / (saved + billed), 4) if saved + billed else None,
            "saved_month_usd": round(usd(month_counts[SAVED_COST]), 6),
            "daily_usd": [
                {"day": day.isoformat(), "usd": round(usd(daily.get(day, 0)), 6)} for day in month
            ],
        }
    return teams


def _cache(metrics: Metrics) -> CacheStatus:
    lookups = {
        labels["result"]: value for labels, value in metrics.samples("rerank_cache_lookups_total")
    }
    answered = sum(lookups.get(k, 0.0) for k in ("hit", "partial", "miss"))
    saved = sum(value for _, value in metrics.samples("rerank_cache_saved_usd_total"))
    return {
        "lookups": {k: int(v) for k, v in sorted(lookups.items())},
        "hit_rate": round(lookups.get("hit", 0.0) / answered, 4) if answered else None,
        "saved_usd": round(saved, 6),
    }


def _tiers(metrics: Metrics) -> list[TierChoice]:
    rows: list[TierChoice] = [
        {
            "alias": labels["alias"],
            "tier": labels["tier"],
            "reason": labels["reason"],
            "requests": int(value),
        }
        for labels, value in metrics.samples("rerank_tier_selections_total")
    ]
    return sorted(rows, key=lambda r: (r["alias"], r["tier"], r["reason"]))


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;
align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{opacity:.85}
header form{margin-left:auto}header button{background:#3a4456}
main{padding:16px 24px;display:grid;gap:16px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;
overflow-x:auto}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;white-space:nowrap}
th{font-weight:600;color:#536075;font-size:12px;text-transform:uppercase;white-space:normal}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.state{padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.closed{background:#dff5e3;color:#17692b}.half_open{background:#fff2cc;color:#7a5b00}
.open{background:#fde0df;color:#9b1c1c}
.bar{position:relative;width:140px;height:14px;background:#eef0f3;border-radius:7px;
overflow:hidden;display:inline-block;vertical-align:middle}
.fill{position:absolute;left:0;top:0;bottom:0;background:#3b82f6}
.fill.warn{background:#f59e0b}.fill.over{background:#dc2626}
.muted{color:#7b8699}
form{display:grid;gap:8px;max-width:320px}
input{font:inherit;padding:6px 8px;border:1px solid #c3c9d3;border-radius:4px}
button{font:inherit;padding:6px 12px;border:0;border-radius:4px;background:#1d2330;color:#fff}
.error{color:#9b1c1c}
td.advice{white-space:normal;min-width:320px}
"""


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width">{meta}'
        f"<title>{html.escape(title)}</title>"
        # An empty icon: the browser would otherwise ask for /favicon.ico (a 404).
        '<link rel="icon" href="data:,">'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def login_page(error: str | None = None) -> str:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _page(
        "Rerank Gateway: sign in",
        "<header><h1>Rerank Gateway</h1><span>status</span></header><main><section>"
        "<h2>Sign in with the admin key</h2>"
        f"{message}"
        '<form method="post" action="/admin/login">'
        '<input type="password" name="key" autocomplete="current-password" '
        'placeholder="admin key" aria-label="admin key" required autofocus>'
        '<button type="submit">Sign in</button></form>'
        '<p class="muted">Signing in opens a session of a few hours; the browser keeps a session '
        'cookie, never the key.</p>'
        "</section></main>",
    )


def _esc(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _bar(label: str, spent: float, budget: float | None) -> str:
    if budget is None:
        return f'<span class="muted">{_usd(spent)} (no budget)</span>'
    share = spent / budget if budget else 1.0
    level = "over" if share >= 1.0 else "warn" if share >= 0.8 else ""
    width = min(100.0, share * 100.0)
    return (
        f'<span class="bar" role="meter" aria-label="{html.escape(label)}" '
        f'aria-valuenow="{spent:.6f}" aria-valuemin="0" aria-valuemax="{budget:.6f}">'
        f'<span class="fill {level}" style="width:{width:.1f}%"></span></span> '
        f'<span class="amount">{_usd(spent)} of {_usd(budget)} ({share * 100:.0f}%)</span>'
    )


def render(data: StatusReport) -> str:
    g = data["gateway"]
    header = (
        "<header><h1>Rerank Gateway</h1>"
        f"<span>version {_esc(g['version'])}</span>"
        f"<span>up {_duration(g['uptime_s'])}</span>"
        f'<span id="worker">answered by worker pid {_esc(g["worker_pid"])} '
        f"of {_esc(g['workers'])}</span>"
        f"<span>Redis: {_esc(g['redis'])}</span>"
        f'<span class="muted">{_esc(g["generated_at"])}, refreshes every {REFRESH_S} s</span>'
        + ("<span>draining</span>" if g["draining"] else "")
        + '<form method="post" action="/admin/logout">'
        '<button type="submit">Sign out</button></form></header>'
    )
    return _page(
        "Rerank Gateway status",
        header
        + "<main>"
        + _deployments(data["deployments"])
        + _teams_html(data["teams"], data["usage_scope"])
        + _cache_html(data["cache"])
        + _tiers_html(data["tiers"])
        + _agreement_html(data["agreement"])
        + _depth_html(data["depth"])
        + "</main>",
        refresh=True,
    )


def _deployments(deployments: dict[str, Any]) -> str:
    rows = []
    for name, d in sorted(deployments.items()):
        latency = d["latency_ms"]
        rows.append(
            f'<tr data-deployment="{html.escape(name)}"><td>{_esc(name)}</td>'
            f"<td>{_esc(', '.join(d['models']))}</td>"
            f'<td><span class="state {html.escape(d["state"])}">{_esc(d["state"])}</span></td>'
            f'<td class="n">{_pct(d["error_rate"])}</td><td class="n">{_esc(d["calls"])}</td>'
            f'<td class="n">{_ms(latency.get("p50"))}</td>'
            f'<td class="n">{_ms(latency.get("p90"))}</td>'
            f'<td class="n">{_esc(d["in_flight"])}</td></tr>'
        )
    return (
        '<section id="deployments"><h2>Deployments <span class="muted">(this worker)</span></h2>'
        "<table><thead><tr><th>Deployment</th><th>Models</th><th>Breaker</th>"
        "<th>Error rate</th><th>Calls</th><th>p50</th><th>p90</th><th>In flight</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _teams_html(teams: dict[str, Any], scope: str) -> str:
    rows = []
    for team, t in sorted(teams.items()):
        if "error" in t:
            rows.append(f'<tr><td>{_esc(team)}</td><td colspan="7">{_esc(t["error"])}</td></tr>')
            continue
        today = _bar(f"{team} today", t["spent_today_usd"], t["budget_day_usd"])
        month = _bar(f"{team} this month", t["spent_month_usd"], t["budget_month_usd"])
        refused = f"{_esc(t['rate_limited_today'])} / {_esc(t['budget_refused_today'])}"
        chart = spend_chart(team, t["daily_usd"], t["budget_day_usd"])
        rows.append(
            f'<tr data-team="{html.escape(team)}"><td>{_esc(team)}</td>'
            f'<td class="today">{today}</td><td class="month">{month}</td>'
            f'<td class="chart">{chart}</td>'
            f'<td class="n">{_esc(t["requests_today"])}</td><td class="n">{refused}</td>'
            f'<td class="n">{_pct(t["cache_share_month"])}</td>'
            f'<td class="n">{_usd(t["saved_month_usd"])}</td></tr>'
        )
    return (
        f'<section id="teams"><h2>Teams <span class="muted">(usage of {_esc(scope)})</span></h2>'
        "<table><thead><tr><th>Team</th><th>Spend today</th><th>Spend this month</th>"
        "<th>Spend per day, this month</th>"
        "<th>Requests today</th><th>Refused today (rate / budget)</th>"
        "<th>Cache share (month)</th><th>Saved (month)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


_CHART_W, _CHART_H, _BAR_GAP = 124, 28, 1


def spend_chart(team: str, days: list[dict[str, Any]], budget_day: float | None) -> str:
    """The month's spend per day as an inline SVG bar chart (no script, nothing fetched):
    one bar a day, scaled to the dearest day or the daily budget, whichever is higher; a
    line at the daily budget; each bar's exact figure in its tooltip."""
    if not days:
        return '<span class="muted">—</span>'
    top = max([d["usd"] for d in days] + [budget_day or 0.0]) or 1.0
    slot = _CHART_W / max(len(days), 28)
    bars = []
    for i, d in enumerate(days):
        height = 0.0 if d["usd"] <= 0 else max(1.0, d["usd"] / top * _CHART_H)
        over = budget_day is not None and d["usd"] > budget_day
        bars.append(
            f'<rect x="{i * slot:.1f}" y="{_CHART_H - height:.1f}" '
            f'width="{max(1.0, slot - _BAR_GAP):.1f}" height="{height:.1f}" '
            f'fill="{"#c0392b" if over else "#3a6ea5"}"><title>{_esc(d["day"])}: '
            f"{_usd(d['usd'])}</title></rect>"
        )
    line = ""
    if budget_day:
        y = _CHART_H - budget_day / top * _CHART_H
        line = (
            f'<line x1="0" x2="{_CHART_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" '
            'stroke-dasharray="2,2"><title>daily budget</title></line>'
        )
    total, dearest = sum(d["usd"] for d in days), max(d["usd"] for d in days)
    label = f"{team}: spend per day this month, {_usd(total)} in all, dearest day {_usd(dearest)}"
    return (
        f'<svg class="spend" role="img" aria-label="{html.escape(label)}" '
        f'width="{_CHART_W}" height="{_CHART_H}" viewBox="0 0 {_CHART_W} {_CHART_H}">'
        f"{''.join(bars)}{line}</svg>"
    )


def _cache_html(cache: CacheStatus) -> str:
    lookups = ", ".join(f"{k} {v}" for k, v in cache["lookups"].items()) or "none yet"
    return (
        '<section id="cache"><h2>Score cache</h2>'
        f"<p>Hit rate <strong>{_pct(cache['hit_rate'])}</strong> "
        f"(lookups: {_esc(lookups)}); saved <strong>{_usd(cache['saved_usd'])}</strong>"
        " since the workers started.</p></section>"
    )


def _tiers_html(tiers: list[TierChoice]) -> str:
    if not tiers:
        body = '<p class="muted">No tiered alias has been called yet.</p>'
    else:
        rows = "".join(
            f"<tr><td>{_esc(r['alias'])}</td><td>{_esc(r['tier'])}</td>"
            f'<td>{_esc(r["reason"])}</td><td class="n">{_esc(r["requests"])}</td></tr>'
            for r in tiers
        )
        body = (
            "<table><thead><tr><th>Alias</th><th>Tier</th><th>Reason</th><th>Requests</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    return f'<section id="tiers"><h2>Tier choices</h2>{body}</section>'


def _agreement_html(rows: list[AgreementRow]) -> str:
    if not rows:
        body = '<p class="muted">No shadow samples yet (see models.&lt;alias&gt;.shadow).</p>'
    else:

        def ndcg(value: Any) -> str:
            return "—" if value is None else f"{value:.3f}"

        cells = "".join(
            f"<tr><td>{_esc(r['alias'])}</td><td>{_esc(r['team'])}</td>"
            f'<td>{_esc(r["direction"])}</td><td class="n">{_esc(r["samples"])}</td>'
            f'<td class="n">{ndcg(r["ndcg_mean"])}</td><td class="n">{ndcg(r["ndcg_p10"])}</td>'
            f"<td>{_esc(r['downgrades'])}</td></tr>"
            for r in rows
        )
        body = (
            "<table><thead><tr><th>Alias</th><th>Team</th><th>Direction</th><th>Samples</th>"
            "<th>NDCG mean</th><th>NDCG p10</th><th>Downgrades</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>"
        )
    return f'<section id="agreement"><h2>Tier agreement (shadow)</h2>{body}</section>'


def _depth_html(depth: DepthPanel) -> str:
    """One row per team and model: what it sends, what it needs, how sure, what a cut saves."""
    rows = depth.get("rows") or []
    if depth.get("error"):
        body = f'<p class="error">{_esc(depth["error"])}</p>'
    elif not rows:
        body = '<p class="muted">No reranked requests counted yet.</p>'
    else:
        body = (
            "<table><thead><tr><th>Team</th><th>Model</th><th>Mode</th>"
            "<th>Sends (mean / p90)</th><th>Needs</th><th>Recall at that depth</th>"
            "<th>Saved per day</th><th>Latency saved (p90)</th><th>Advice</th></tr></thead>"
            f"<tbody>{''.join(_depth_row(r) for r in rows)}</tbody></table>"
        )
    hours = depth.get("window_hours")
    window = "" if hours is None else f", the last {hours:g} h"
    scope = f"{_esc(depth.get('scope'))}{window}"
    return (
        f'<section id="depth"><h2>Depth advice <span class="muted">({scope}; '
        f"docs/depth.md)</span></h2>{body}</section>"
    )


def _depth_row(r: DepthRow) -> str:
    sends = r["sends"]
    mean = "—" if sends["mean"] is None else f"{sends['mean']:.0f}"
    needs = "—" if r["needs"] is None else str(r["needs"]) if r["cuts"] else f"all ({r['needs']})"
    recall = r.get("recall")
    recall_text = (
        "—"
        if recall is None
        else f"{recall['recall']:.3f} ({recall['low']:.3f} to {recall['high']:.3f})"
    )
    saving: Mapping[str, Any] = r.get("saving") or {}
    latency = saving.get("latency_ms_p90")
    per_day = saving.get("requests_per_day") or 0.0
    latency_text = (
        "—"
        if latency is None
        else f"{latency:.0f} ms per request ({latency * per_day / 3_600_000:.1f} h a day)"
    )
    mode: str = r["mode"]
    if r.get("enforced"):
        mode += f" at {r['enforced']}"
    elif r.get("reverted"):
        mode += " (switched back to advise)"
    return (
        f'<tr data-team="{html.escape(r["team"])}" data-model="{html.escape(r["model"])}">'
        f"<td>{_esc(r['team'])}</td><td>{_esc(r['model'])}</td><td>{_esc(mode)}</td>"
        f'<td class="n">{mean} / {_esc(sends["p90"])}</td>'
        f'<td class="n needs">{_esc(needs)}</td><td class="n">{_esc(recall_text)}</td>'
        f'<td class="n">{_usd(saving.get("usd_per_day")) if saving else "—"}</td>'
        f'<td class="n">{_esc(latency_text)}</td>'
        f'<td class="advice">{_esc(r["message"])}</td></tr>'
    )
