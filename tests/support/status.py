"""A gateway in a known state for the status page tests (HTML and browser).

Deployment `b` fails and its breaker opens after one failure; `a` serves. Team `search`
has a daily budget of $0.01 and spends $0.006 (three upstream calls of one search unit
at the default $2 per 1000 units), plus one cache hit; team `ads` has no budget and
spends $0.002.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import aiohttp

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http import status
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, gateway_config
from tests.fakes.cohere import Faults
from tests.support.calls import post
from tests.support.routing import serve_fakes
from tests.support.servers import ServerLoop

DAY_BUDGET, MONTH_BUDGET = 0.01, 0.2
SEARCH_SPENT = 0.006


async def busy_gateway(servers: ServerLoop) -> str:
    fakes, urls = serve_fakes(servers, "b", "a")  # b first: it is tried first and fails
    fakes["b"].faults = Faults(status=503)
    data: dict[str, Any] = gateway_config(urls)
    data["routing"] = {"breaker": {"failures": 1, "cooldown_s": 3600}}
    data["teams"]["search"]["budget"] = {"usd_per_day": DAY_BUDGET, "usd_per_month": MONTH_BUDGET}
    url = servers.serve(build_app(parse_config(data, {})))
    for query in ("capital of France", "capital of Spain", "capital of Italy"):
        body = {"model": "rerank-v3.5", "query": query, "documents": ["Paris", "Madrid", "Rome"]}
        status, _, _ = await post(url, body)
        assert status == 200
    again = {"model": "rerank-v3.5", "query": "capital of Spain", "documents": ["Madrid", "Rome"]}
    status, headers, _ = await post(url, again)
    assert status == 200 and headers["X-Cache"] == "hit"
    status, _, _ = await post(url, headers={"Authorization": f"Bearer {OTHER_TEAM_KEY}"})
    assert status == 200
    return url


async def sign_in(
    url: str, key: str = ADMIN_KEY, source: str | None = None, **headers: str
) -> tuple[int, Any, str]:
    """POST the sign-in form (from `source`, a local address): status, headers, page."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0)) if source else None
    async with (
        aiohttp.ClientSession(connector=connector) as client,
        client.post(
            url + "/admin/login", data={"key": key}, headers=headers, allow_redirects=False
        ) as resp,
    ):
        return resp.status, resp.headers, await resp.text()


def token_of(headers: Any) -> str:
    return SimpleCookie(headers["Set-Cookie"])[status.COOKIE].value


async def page(url: str, token: str, path: str = "/admin/status") -> str:
    """The page a browser holding the session cookie gets (a new connection each time)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
        client.get(url + path, headers={"Cookie": f"{status.COOKIE}={token}"}) as resp,
    ):
        return await resp.text()


def signed_in(text: str) -> bool:
    if 'id="deployments"' in text:
        return True
    assert 'action="/admin/login"' in text, text[:300]
    return False


async def sign_out(url: str, token: str) -> int:
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            url + "/admin/logout",
            headers={"Cookie": f"{status.COOKIE}={token}"},
            allow_redirects=False,
        ) as resp,
    ):
        return resp.status
