"""The `mixedbread` provider against the strict Mixedbread fake: `input` and
`return_input`, token usage, split at 1,000 inputs, FastAPI-style errors."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.fakes.cohere import Faults
from tests.fakes.mixedbread import MIXEDBREAD_KEY, FakeMixedbread
from tests.fakes.strict import token_count
from tests.support.clouds import expected_order, expected_scores
from tests.support.selfhosted import (
    MANY_DOCS,
    QUERY,
    direct,
    post_sync,
    provider_config,
    serves_v2_and_v1,
    uncached,
)
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:10]
MODEL = "mixedbread-ai/mxbai-rerank-large-v2"


@pytest.fixture
def mixedbread(servers: ServerLoop) -> tuple[FakeMixedbread, str]:
    fake = FakeMixedbread()
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "mixedbread", "base_url": url, "api_key": MIXEDBREAD_KEY, "timeout_s": 5, **more}


def test_serves_v2_and_v1(
    mixedbread: tuple[FakeMixedbread, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = mixedbread
    data = uncached(provider_config({"mxb": settings(url)}, "mxbai", MODEL))
    gateway = start_gateway(data)
    scores = serves_v2_and_v1(gateway, "mxbai", DOCS, expected_order(QUERY, DOCS), scale=None)
    assert scores == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls[0] == {"model": MODEL, "query": QUERY, "input": DOCS, "return_input": False}
    assert fake.headers[0]["Authorization"] == f"Bearer {MIXEDBREAD_KEY}"
    assert fake.requested == ["/v1/reranking"] * 2


def test_tokens_summed_over_sub_batches(
    mixedbread: tuple[FakeMixedbread, str], servers: ServerLoop
) -> None:
    fake, url = mixedbread
    opts = {"base_url": url, "api_key": MIXEDBREAD_KEY, "max_batch_size": 4}
    result = direct(servers, "mixedbread", opts, DOCS, model=MODEL)
    assert sorted(len(c["input"]) for c in fake.calls) == [2, 4, 4]
    assert result.tokens == sum(token_count(QUERY, *DOCS[i : i + 4]) for i in (0, 4, 8))


def test_errors_reach_the_caller_as_their_kind(
    mixedbread: tuple[FakeMixedbread, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = mixedbread
    body = {"query": QUERY, "documents": DOCS}
    wrong = start_gateway(provider_config({"mxb": settings(url, api_key="x")}, "m", MODEL))
    resp = post_sync(wrong, {"model": "m", **body})
    assert resp.status_code == 502
    assert "mxb answered 401: Invalid API key" in resp.json()["message"]
    fake.faults = Faults(status=503, retry_after="2")
    gateway = start_gateway(provider_config({"mxb": settings(url)}, "m", MODEL))
    resp = post_sync(gateway, {"model": "m", **body})
    assert resp.status_code == 503  # an outage: Retry-After 1 (docs/errors.md)
    assert "mxb answered 503: injected failure 503" in resp.json()["message"]


def test_the_fake_refuses_extra_fields_with_fastapis_detail(
    mixedbread: tuple[FakeMixedbread, str], servers: ServerLoop
) -> None:
    _, url = mixedbread
    body = {"model": MODEL, "query": QUERY, "input": ["a"], "documents": ["a"]}
    resp = httpx.post(
        url + "/v1/reranking", json=body, headers={"Authorization": f"Bearer {MIXEDBREAD_KEY}"}
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["type"] == "extra_forbidden"
