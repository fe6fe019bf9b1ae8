"""A call during an outage ends within seconds, with the real `cohere` SDK at its default
settings (it retries a 503 twice and sleeps for Retry-After, up to 60 s, before each).

Asserted on behaviour, not on a clock: how many requests the gateway saw, the SDK's
error type, and the wait the SDK's own retry code derives from the answer's headers.
The breakers open on the first failure and stay open 300 s, far beyond the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import cohere
import httpx
import pytest
from cohere.core.http_client import _retry_timeout

from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.routing import metric

QUERY = "capital of France"
DOCS = ["Paris is the capital of France", "bananas are yellow"]
BREAKER = {"failures": 1, "cooldown_s": 300}


def outage_gateway(
    fake_cohere: tuple[FakeCohere, str], start: Callable[..., str], **team: Any
) -> str:
    """A gateway whose one deployment has failed once, so its breaker is open (tripped by
    team `ads`, which has no fallback of its own)."""
    fake, upstream = fake_cohere
    fake.faults = Faults(status=500)
    data = gateway_config({"cohere-a": upstream}, routing={"breaker": BREAKER})
    data["teams"]["search"].update(team)
    url = start(data)
    trip = httpx.post(
        url + "/v2/rerank",
        json={"model": "rerank-v3.5", "query": "trip", "documents": ["x"]},
        headers={"Authorization": f"Bearer {OTHER_TEAM_KEY}"},
    )
    assert trip.status_code == 503 and len(fake.calls) == 1
    return url


async def seen(url: str, status: str) -> float:
    return await metric(
        url, "rerank_requests_total", team="search", model="rerank-v3.5", status=status
    )


async def test_the_sdk_gives_up_at_once_with_a_clear_error(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = outage_gateway(fake_cohere, start_gateway)
    before = await seen(url, "503")
    co = cohere.AsyncClientV2(api_key=TEAM_KEY, base_url=url)  # the SDK's defaults
    with pytest.raises(cohere.ServiceUnavailableError) as info:
        await co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    # Its two retries came and were answered at once; the upstream saw none of them.
    assert await seen(url, "503") - before == 3
    assert len(fake_cohere[0].calls) == 1
    error = info.value
    assert "every deployment's circuit breaker is open" in error.body["message"]
    # The breaker's real timing is in the message (it counts down from 300 s).
    wait = re.search(r"probed again in (\d+) s", error.body["message"])
    assert wait is not None and 200 < int(wait.group(1)) <= 300
    # What the SDK slept before each retry, by its own rule: 0.1 s, not the 300 s left.
    answer = httpx.Response(503, headers=error.headers)
    assert [_retry_timeout(answer, retries=n) for n in (0, 1)] == [0.1, 0.1]
    # The TypeScript SDK reads whole seconds only (its shortest wait is 1 s).
    assert error.headers["retry-after"] == "1"


async def test_a_team_with_a_fail_open_answer_gets_it_in_one_request(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = outage_gateway(fake_cohere, start_gateway, fallback="local")
    before = await seen(url, "200")
    co = cohere.AsyncClientV2(api_key=TEAM_KEY, base_url=url)
    raw = await co.with_raw_response.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert await seen(url, "200") - before == 1
    assert raw.headers["x-rerank-deployment"] == "fallback/local"
    assert raw.headers["x-rerank-score-scale"] == "bm25"
    assert raw.data.results[0].index == 0  # BM25 still ranks the matching document first
    (warning,) = raw.data.meta.warnings
    assert "circuit breaker is open" in warning and "(fallback: local)" in warning


async def test_a_team_fallback_overrides_the_models_and_other_teams_keep_theirs(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = outage_gateway(fake_cohere, start_gateway, fallback="passthrough")
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}
    ours = httpx.post(
        url + "/v2/rerank", json=body, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    )
    theirs = httpx.post(
        url + "/v2/rerank", json=body, headers={"Authorization": f"Bearer {OTHER_TEAM_KEY}"}
    )
    assert ours.status_code == 200 and ours.headers["X-Rerank-Score-Scale"] == "placeholder"
    assert theirs.status_code == 503  # the model's own fallback is `error`
