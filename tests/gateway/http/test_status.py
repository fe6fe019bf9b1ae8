"""The status page without a browser: sign-in, the cookie, the numbers in the HTML, and
that the page needs nothing from elsewhere (the browser test is test_status_browser.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.support.routing import ADMIN, get
from tests.support.servers import ServerLoop
from tests.support.status import DAY_BUDGET, SEARCH_SPENT, busy_gateway


@pytest.fixture
async def url(servers: ServerLoop) -> str:
    return await busy_gateway(servers)


def session() -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP address host (127.0.0.1), as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_the_page_asks_for_the_key_and_a_wrong_one_is_refused(url: str) -> None:
    async with session() as client:
        async with client.get(url + "/admin/status") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
        assert '<form method="post" action="/admin/login">' in page
        assert 'type="password" name="key"' in page
        assert "search" not in page  # nothing about teams before signing in
        async with client.post(url + "/admin/login", data={"key": "nope"}) as resp:
            assert resp.status == 401
            assert "invalid admin key" in await resp.text()
        async with client.post(url + "/admin/login", data={"key": TEAM_KEY}) as resp:
            assert resp.status == 401  # a team key is not the admin key
        assert not client.cookie_jar.filter_cookies(url + "/admin/status")


async def test_signing_in_sets_an_http_only_same_site_cookie_and_no_key_in_urls(url: str) -> None:
    async with session() as client:
        async with client.post(
            url + "/admin/login", data={"key": ADMIN_KEY}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/admin/status"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/" in cookie
        assert "Max-Age" not in cookie and "expires" not in cookie.lower()  # a session cookie
        async with client.get(url + "/admin/status") as resp:
            page = await resp.text()
        assert resp.status == 200 and 'id="deployments"' in page
        assert ADMIN_KEY not in page
        async with client.post(url + "/admin/logout") as resp:
            assert 'action="/admin/login"' in await resp.text()  # back to the form


async def test_the_page_shows_deployments_budgets_and_the_gateway(url: str) -> None:
    status, page = await get(url, "/admin/status", ADMIN)  # the header works too
    assert status == 200
    a = _row(page, 'data-deployment="a/rerank-v3.5"')
    b = _row(page, 'data-deployment="b/rerank-v3.5"')
    assert '<span class="state closed">closed</span>' in a
    assert '<span class="state open">open</span>' in b
    assert "100.0%" in b  # its one call failed
    search = _row(page, 'data-team="search"')
    assert f'aria-valuenow="{SEARCH_SPENT:.6f}"' in search
    assert f'aria-valuemax="{DAY_BUDGET:.6f}"' in search
    assert "$0.0060 of $0.0100 (60%)" in search
    assert 'style="width:60.0%"' in search
    ads = _row(page, 'data-team="ads"')
    assert "$0.0020 (no budget)" in ads
    assert "answered by worker pid" in page and "Redis: not configured" in page
    assert "Hit rate <strong>20.0%</strong>" in page  # 1 hit of 5 lookups
    assert '<meta http-equiv="refresh" content="5">' in page


async def test_the_page_loads_nothing_from_elsewhere(url: str) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(url + "/admin/status", headers=ADMIN) as resp,
    ):
        page = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # no scripts, images or stylesheets
    assert "http://" not in page and "https://" not in page


async def test_the_json_has_the_same_numbers(url: str) -> None:
    status, data = await get(url, "/admin/status.json", ADMIN)
    assert status == 200
    search: dict[str, Any] = data["teams"]["search"]
    assert search["spent_today_usd"] == pytest.approx(SEARCH_SPENT)
    assert search["budget_day_usd"] == DAY_BUDGET
    assert search["requests_today"] == 3
    assert data["deployments"]["b/rerank-v3.5"]["state"] == "open"
    assert data["cache"]["lookups"] == {"bypass": 0, "hit": 1, "miss": 4, "partial": 0}
    assert data["cache"]["hit_rate"] == 0.2
    assert (await get(url, "/admin/status.json"))[0] == 401


def _row(page: str, marker: str) -> str:
    start = page.index(marker)
    return page[start : page.index("</tr>", start)]


async def test_each_team_has_its_spend_per_day_this_month_as_a_chart(url: str) -> None:
    today = datetime.now(UTC).date()
    status, data = await get(url, "/admin/status.json", ADMIN)
    assert status == 200
    days = data["teams"]["search"]["daily_usd"]
    assert [d["day"] for d in days][-1] == today.isoformat() and len(days) == today.day
    assert days[-1]["usd"] == pytest.approx(SEARCH_SPENT)
    assert all(d["usd"] == 0 for d in days[:-1])  # nothing was spent before today
    _, page = await get(url, "/admin/status", ADMIN)
    chart = _row(page, 'data-team="search"').split('<td class="chart">', 1)[1]
    assert chart.startswith('<svg class="spend" role="img"')
    assert "spend per day this month, $0.0060 in all, dearest day $0.0060" in chart
    assert chart.count("<rect") == today.day  # one bar a day
    assert f"<title>{today.isoformat()}: $0.0060</title>" in chart
    assert "<title>daily budget</title>" in chart  # the line at $0.01
    assert "no budget" not in chart and "<title>daily budget</title>" not in _row(
        page, 'data-team="ads"'
    )
