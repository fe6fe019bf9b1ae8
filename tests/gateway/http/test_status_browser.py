"""The status page in a real browser: headless Chromium signs in through the form, sees
the deployments table and a team's budget bar with the right numbers, logs no console
error, and leaves a screenshot in tests/artifacts/status-page.png.

Needs Debian's `chromium` (`.ci/run` installs it); without it this test fails, it does
not skip.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import ADMIN_KEY
from tests.support.cdp import Browser, chromium_path
from tests.support.paths import ROOT
from tests.support.servers import ServerLoop
from tests.support.status import DAY_BUDGET, SEARCH_SPENT, busy_gateway

ARTIFACTS = ROOT / "tests" / "artifacts"

READ_PAGE = """JSON.stringify({
  title: document.title,
  deployments: [...document.querySelectorAll('#deployments tbody tr')].map(r => ({
    name: r.dataset.deployment,
    state: r.querySelector('.state').textContent,
    cells: [...r.querySelectorAll('td')].map(c => c.textContent),
  })),
  bar: (() => {
    const meter = document.querySelector('tr[data-team="search"] .today [role=meter]');
    return {
      now: meter.getAttribute('aria-valuenow'),
      max: meter.getAttribute('aria-valuemax'),
      width: getComputedStyle(meter.firstElementChild).width,
      total: getComputedStyle(meter).width,
      text: document.querySelector('tr[data-team="search"] .today .amount').textContent,
    };
  })(),
  worker: document.getElementById('worker').textContent,
  cookieVisibleToScripts: document.cookie,
})"""


async def test_the_status_page_in_headless_chromium(servers: ServerLoop) -> None:
    binary = chromium_path()
    if binary is None:
        pytest.fail(
            "chromium is not installed: the status page must be tested in a real browser "
            "(apt-get install chromium, as .ci/run does)"
        )
    url = await busy_gateway(servers)
    async with Browser(binary) as browser:
        await browser.goto(url + "/admin/status")
        assert await browser.evaluate("document.querySelector('form input[name=key]') !== null")
        signed_in = browser.expect("Page.loadEventFired")
        await browser.evaluate(
            f"document.querySelector('input[name=key]').value = {json.dumps(ADMIN_KEY)};"
            "document.querySelector('form[action=\"/admin/login\"]').requestSubmit();"
        )
        await signed_in
        assert await browser.evaluate("location.pathname + location.search") == "/admin/status"
        page = json.loads(await browser.evaluate(READ_PAGE))
        await browser.screenshot(ARTIFACTS / "status-page.png")
        errors = list(browser.console_errors)

    assert page["title"] == "Rerank Gateway status"
    rows = {row["name"]: row for row in page["deployments"]}
    assert rows["a/rerank-v3.5"]["state"] == "closed"
    assert rows["b/rerank-v3.5"]["state"] == "open"
    assert rows["b/rerank-v3.5"]["cells"][3] == "100.0%"  # error rate of its one call
    bar = page["bar"]
    assert float(bar["now"]) == pytest.approx(SEARCH_SPENT)
    assert float(bar["max"]) == pytest.approx(DAY_BUDGET)
    assert bar["text"] == "$0.0060 of $0.0100 (60%)"
    # The bar is drawn at 60% of its track (widths in CSS pixels).
    assert float(bar["width"].removesuffix("px")) == pytest.approx(
        0.6 * float(bar["total"].removesuffix("px")), abs=1.0
    )
    assert "answered by worker pid" in page["worker"]
    assert page["cookieVisibleToScripts"] == ""  # HTTP-only: no script can read the key
    assert errors == []
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
