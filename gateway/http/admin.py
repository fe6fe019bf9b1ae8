"""The admin API under `/admin/`: usage reports and depth advice (the admin key, or a
manager key for its own team), deployment health and the tiers' shadow evaluation (the
admin key); the key routes themselves are `gateway.http.keys`'. Errors are raised as
`ApiError`s and answered by the edge middleware in Cohere's shape.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import ApiError, bad_request
from gateway.http.keys import own_team_query
from gateway.http.runtime import current
from gateway.state.accounts import STORE_RETRY_S
from gateway.state.api_keys import Actor, KeyService
from gateway.state.depth import DepthBook
from gateway.state.usage_reports import UsageReports
from policies.money.ledger_pg import LedgerUnavailable
from policies.money.quota import StoreUnavailable
from policies.money.usage import month_range, parse_groups, report_range

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORMATS = ("json", "csv")


def admin_route(handler: Handler) -> Handler:
    """Guard an /admin/ handler with the admin key (refusals answered by the edge middleware)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        current(request).auth.check_admin(request.headers.get("Authorization"))
        return await handler(request)

    return guarded


def key_actor(request: web.Request) -> tuple[Actor, KeyService | None]:
    """The admin or a team manager, and this gateway's key service (the key routes')."""
    gateway = current(request)
    return gateway.auth.principal(request.headers.get("Authorization")), gateway.keys


async def usage(request: web.Request) -> web.Response:
    """`GET /admin/usage?team=&from=&to=|month=&by=&format=json|csv`: usage and cost (a
    manager key: its own team's only)."""
    gateway = current(request)
    actor = gateway.auth.principal(request.headers.get("Authorization"))
    query = own_team_query(actor, request.query)
    kind = report_format(query)
    api_teams = gateway.keeper.directory.teams() if gateway.keeper is not None else set()
    report = await usage_report(gateway.reports, query, api_teams)
    if kind == "csv":
        return web.Response(text=report_csv(report), content_type="text/csv")
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def depth(request: web.Request) -> web.Response:
    """`GET /admin/depth?team=`: the depth advice per team and model (a manager key: its
    own team's), after adding this process's latest counts to the store."""
    gateway = current(request)
    actor = gateway.auth.principal(request.headers.get("Authorization"))
    query = own_team_query(actor, request.query, "depth advice", "/admin/depth")
    report = await depth_report(gateway.depth, gateway.depth_teams(), query)
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def deployments(request: web.Request) -> web.Response:
    """Breaker state, recent error rate and latency per deployment (admin)."""
    return web.json_response(current(request).deployments.snapshot())


async def tiers(request: web.Request) -> web.Response:
    """Shadow quality evaluation of the tiered aliases (admin; see docs/tiers.md)."""
    shadow = current(request).shadow
    report = shadow.report() if shadow is not None else {"scope": "this process", "aliases": {}}
    return web.Response(body=orjson.dumps(report), content_type="application/json")


def asked_teams(teams: list[str], query: Mapping[str, str]) -> list[str]:
    """The report's teams: the one `?team=` names (404 when unknown), else all."""
    team = query.get("team")
    if not team:
        return teams
    if team not in teams:
        raise ApiError(404, f"unknown team {team!r}; teams: {', '.join(teams)}")
    return [team]


async def usage_report(
    reports: UsageReports, query: Mapping[str, str], api_teams: Collection[str] = ()
) -> dict[str, Any]:
    """`GET /admin/usage?team=&from=YYYY-MM-DD&to=YYYY-MM-DD|month=YYYY-MM&by=team,model`:
    usage and cost per group (the configured teams and those that only have API keys)."""
    teams = asked_teams(sorted({*reports.teams, *api_teams}), query)
    try:
        if query.get("month"):
            if query.get("from") or query.get("to"):
                raise ValueError("give either month or from/to, not both")
            first, last = month_range(query["month"])
        else:
            first, last = report_range(query.get("from"), query.get("to"), reports.clock())
        by = parse_groups(query.get("by"))
        return await reports.report(teams, first, last, by)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    except (StoreUnavailable, LedgerUnavailable):
        where = "usage ledger (PostgreSQL)" if reports.ledger is not None else "usage store (Redis)"
        raise ApiError(
            503, f"the {where} is unreachable; retry shortly", retry_after_s=STORE_RETRY_S
        ) from None


async def depth_report(
    book: DepthBook, teams: Collection[str], query: Mapping[str, str]
) -> dict[str, Any]:
    """`GET /admin/depth?team=`: the depth advice of each team and model with counts."""
    try:
        return await book.report(asked_teams(sorted(teams), query), flush=True)
    except StoreUnavailable:
        raise ApiError(
            503,
            "the depth store (Redis) is unreachable; retry shortly",
            retry_after_s=STORE_RETRY_S,
        ) from None


def report_format(query: Mapping[str, str]) -> str:
    found = query.get("format", "json")
    if found not in FORMATS:
        raise bad_request(f"format must be one of {', '.join(FORMATS)} (got {found[:20]!r})")
    return found


def report_csv(report: Mapping[str, Any]) -> str:
    """The report's rows as CSV: the group columns, then every figure (for finance)."""
    rows = report["rows"]
    out = io.StringIO()
    groups = list(report.get("group_by") or [])
    figures = [k for k in (rows[0] if rows else {}) if k not in groups]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["from", "to", *groups, *figures])
    for row in rows:
        writer.writerow(
            [report["from"], report["to"], *(_cell(row.get(g)) for g in groups)]
            + [_cell(row.get(f)) for f in figures]
        )
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A spreadsheet runs a cell that starts with one of these as a formula.
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text
