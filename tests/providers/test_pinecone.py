"""The `pinecone` provider against the strict Pinecone Inference fake: `Api-Key` and the
API version header, documents as objects, per-model caps, rerank units, its errors."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from providers.types import ProviderError
from tests.fakes.cohere import Faults, fake_score
from tests.fakes.pinecone import PINECONE_KEY, FakePinecone
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


@pytest.fixture
def pinecone(servers: ServerLoop) -> tuple[FakePinecone, str]:
    fake = FakePinecone()
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "pinecone", "base_url": url, "api_key": PINECONE_KEY, "timeout_s": 5, **more}


def test_serves_v2_and_v1_with_its_headers(
    pinecone: tuple[FakePinecone, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = pinecone
    data = uncached(provider_config({"pc": settings(url)}, "bge-m3", "bge-reranker-v2-m3"))
    scores = serves_v2_and_v1(
        start_gateway(data), "bge-m3", DOCS, expected_order(QUERY, DOCS), scale="calibrated"
    )
    assert scores == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls[0] == {
        "model": "bge-reranker-v2-m3",
        "query": QUERY,
        "documents": [{"text": d} for d in DOCS],
        "return_documents": False,
    }
    assert fake.headers[0]["Api-Key"] == PINECONE_KEY
    assert fake.headers[0]["X-Pinecone-Api-Version"] == "2025-10"
    assert "Authorization" not in fake.headers[0]


@pytest.mark.parametrize(
    ("model", "slices"),
    [("bge-reranker-v2-m3", [50, 100]), ("cohere-rerank-3.5", [150])],
)
def test_split_at_each_models_cap_and_units_summed(
    pinecone: tuple[FakePinecone, str], servers: ServerLoop, model: str, slices: list[int]
) -> None:
    fake, url = pinecone
    docs = MANY_DOCS + MANY_DOCS[:50]
    opts = {"base_url": url, "api_key": PINECONE_KEY, "truncate": "NONE"}
    result = direct(servers, "pinecone", opts, docs, model=model)
    assert sorted(len(c["documents"]) for c in fake.calls) == slices
    assert result.search_units == len(slices)  # one rerank unit per request
    assert result.scores == [fake_score(QUERY, d) for d in docs]
    assert all(c["parameters"] == {"truncate": "NONE"} for c in fake.calls)


def test_wrong_key_unknown_model_and_throttling(
    pinecone: tuple[FakePinecone, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = pinecone
    body = {"query": QUERY, "documents": DOCS}
    wrong = start_gateway(
        provider_config({"pc": settings(url, api_key="x")}, "m", "bge-reranker-v2-m3")
    )
    resp = post_sync(wrong, {"model": "m", **body})
    assert resp.status_code == 502
    assert "pc answered 401 UNAUTHENTICATED: Invalid API Key" in resp.json()["message"]
    unknown = start_gateway(provider_config({"pc": settings(url)}, "m", "no-such-model"))
    resp = post_sync(unknown, {"model": "m", **body})
    assert resp.status_code == 502
    assert "pc answered 404 NOT_FOUND" in resp.json()["message"]
    fake.faults = Faults(status=429, retry_after="9")
    ok = start_gateway(provider_config({"pc": settings(url)}, "m", "bge-reranker-v2-m3"))
    resp = post_sync(ok, {"model": "m", **body})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "9"
    assert "pc answered 429 RESOURCE_EXHAUSTED" in resp.json()["message"]


def test_an_unsupported_api_version_is_refused(
    pinecone: tuple[FakePinecone, str], servers: ServerLoop
) -> None:
    fake, url = pinecone
    with pytest.raises(ProviderError, match="p answered 400 INVALID_ARGUMENT: Unsupported API"):
        direct(
            servers,
            "pinecone",
            {"base_url": url, "api_key": PINECONE_KEY, "api_version": "2019-01"},
            DOCS,
            model="bge-reranker-v2-m3",
        )
    assert fake.calls == []


def test_the_fake_refuses_bare_strings_and_two_rank_fields(
    pinecone: tuple[FakePinecone, str],
) -> None:
    _, url = pinecone
    headers = {"Api-Key": PINECONE_KEY, "X-Pinecone-Api-Version": "2025-10"}
    base = {"model": "bge-reranker-v2-m3", "query": QUERY}
    bare = httpx.post(url + "/rerank", json={**base, "documents": ["a"]}, headers=headers)
    assert bare.status_code == 400
    assert bare.json()["error"]["code"] == "INVALID_ARGUMENT"
    two = {**base, "documents": [{"text": "a", "title": "b"}], "rank_fields": ["text", "title"]}
    resp = httpx.post(url + "/rerank", json=two, headers=headers)
    assert resp.json()["error"]["message"] == (
        "Only one rank field is supported for model bge-reranker-v2-m3"
    )
