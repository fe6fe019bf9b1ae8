"""Admin reports (served under `/admin/`, behind the admin key): usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from gateway.errors import ApiError, bad_request
from gateway.state.governance import STORE_RETRY_S, Governance
from policies.quota import StoreUnavailable
from policies.usage import collect, report_range

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def usage_report(
    governance: Governance, query: Mapping[str, str], api_teams: Collection[str] = ()
) -> dict[str, Any]:
    """`GET /admin/usage?team=&from=YYYY-MM-DD&to=YYYY-MM-DD`: usage and cost per team
    (the configured teams and those that only have API keys)."""
    teams = sorted({*governance.report_teams, *api_teams})
    team = query.get("team")
    if team:
        if team not in teams:
            raise ApiError(404, f"unknown team {team!r}; teams: {', '.join(teams)}")
        teams = [team]
    try:
        first, last = report_range(query.get("from"), query.get("to"), governance.clock())
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    try:
        report = await collect(governance.usage.store, teams, first, last)
    except StoreUnavailable:
        raise ApiError(
            503,
            "the usage store (Redis) is unreachable; retry shortly",
            retry_after_s=STORE_RETRY_S,
        ) from None
    report["scope"] = "all replicas" if governance.shared else "this process"
    return report
