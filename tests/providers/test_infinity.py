"""The `infinity` provider against the strict Infinity fake: Cohere-like body, FastAPI
422 `{detail}` errors read, usage tokens, splitting at its batch limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.infinity import SERVED_MODEL, FakeInfinity
from tests.fakes.strict import token_count
from tests.support.clouds import client, expected_order
from tests.support.selfhosted import MANY_DOCS, QUERY, direct, post_sync, provider_config
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:20]


@pytest.fixture
def infinity(servers: ServerLoop) -> tuple[FakeInfinity, str]:
    fake = FakeInfinity(api_key="inf-key", max_client_batch_size=8)
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "infinity", "base_url": url, "api_key": "inf-key", "timeout_s": 5, **more}


def test_split_at_the_batch_limit_and_merged_in_order(
    infinity: tuple[FakeInfinity, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = infinity
    data = provider_config({"inf": settings(url, max_batch_size=8)}, "mxbai", SERVED_MODEL)
    raw = client(start_gateway(data)).with_raw_response.rerank(
        model="mxbai", query=QUERY, documents=DOCS, top_n=4
    )
    assert [r.index for r in raw.data.results] == expected_order(QUERY, DOCS)[:4]
    assert sorted(len(c["documents"]) for c in fake.calls) == [4, 8, 8]
    assert all(set(c) == {"model", "query", "documents"} for c in fake.calls)  # no top_n
    assert fake.headers[0]["Authorization"] == "Bearer inf-key"


def test_fastapi_422_detail_is_shown_to_the_caller(
    infinity: tuple[FakeInfinity, str], start_gateway: Callable[..., str]
) -> None:
    _, url = infinity
    data = provider_config({"inf": settings(url, max_batch_size=10)}, "mxbai", SERVED_MODEL)
    resp = post_sync(start_gateway(data), {"model": "mxbai", "query": QUERY, "documents": DOCS[:10]})
    assert resp.status_code == 422
    assert (
        "inf answered 422: documents: List should have at least 1 item and at most 8 items"
        in resp.json()["message"]
    )


def test_a_model_not_deployed_is_a_gateway_problem(
    infinity: tuple[FakeInfinity, str], start_gateway: Callable[..., str]
) -> None:
    _, url = infinity
    data = provider_config({"inf": settings(url)}, "mxbai", "BAAI/bge-reranker-base")
    resp = post_sync(start_gateway(data), {"model": "mxbai", "query": QUERY, "documents": DOCS[:3]})
    assert resp.status_code == 502
    assert "Model BAAI/bge-reranker-base not deployed" in resp.json()["message"]
    assert "a gateway configuration problem" in resp.json()["message"]


def test_usage_tokens_are_summed_over_sub_batches(
    infinity: tuple[FakeInfinity, str], servers: ServerLoop
) -> None:
    _, url = infinity
    opts = {"base_url": url, "api_key": "inf-key", "max_batch_size": 8}
    result = direct(servers, "infinity", opts, DOCS, model=SERVED_MODEL)
    slices = [DOCS[i : i + 8] for i in range(0, 20, 8)]
    assert result.tokens == sum(token_count(QUERY, *s) for s in slices)


def test_missing_key_is_refused(
    infinity: tuple[FakeInfinity, str], start_gateway: Callable[..., str]
) -> None:
    _, url = infinity
    data = provider_config({"inf": {"type": "infinity", "base_url": url}}, "mxbai", SERVED_MODEL)
    resp = post_sync(start_gateway(data), {"model": "mxbai", "query": QUERY, "documents": DOCS[:3]})
    assert resp.status_code == 502
    assert "inf answered 401: Not authenticated" in resp.json()["message"]
