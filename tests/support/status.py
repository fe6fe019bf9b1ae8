"""A gateway in a known state for the status page tests (HTML and browser).

Deployment `b` fails and its breaker opens after one failure; `a` serves. Team `search`
has a daily budget of $0.01 and spends $0.006 (three upstream calls of one search unit
at the default $2 per 1000 units), plus one cache hit; team `ads` has no budget and
spends $0.002.
"""

from __future__ import annotations

from typing import Any

from gateway.app import build_app
from gateway.config import parse_config
from tests.conftest import OTHER_TEAM_KEY, gateway_config
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
