"""Over-fetch limits through the HTTP API: 400 and 413 messages, truncation and indices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.calls import post
from tests.support.governance import get, metrics_text

DOCS = [f"document number {i} about capitals" for i in range(150)]


def config(upstream: str, search: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    data = gateway_config({"cohere-a": upstream}, **sections)
    data["teams"]["search"].update(search or {})
    return data


async def test_default_limit_rejects_more_than_100_documents(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(config(upstream))
    body = {"model": "rerank-v3.5", "query": "capital", "documents": DOCS[:101]}
    status, _, answer = await post(url, body, TEAM_KEY)
    assert status == 400
    assert answer["message"] == (
        "invalid request: too many documents: team 'search' sent 101 documents for model "
        "'rerank-v3.5' and its limit is max_documents=100; send only the best 100 of your "
        "first-stage results"
    )
    assert fake.calls == []
    status, _, _ = await post(url, {**body, "documents": DOCS[:100]}, TEAM_KEY)
    assert status == 200
    text = await metrics_text(url)
    assert 'rerank_overfetch_total{action="reject",limit="max_documents",team="search"} 1.0' in text


async def test_truncate_keeps_the_first_documents_and_their_indices(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(
        config(upstream, search={"limits": {"max_documents": 3, "overfetch": "truncate"}})
    )
    docs = ["bananas", "Paris is the capital", "apples", "Berlin is a capital", "capital city"]
    status, _, answer = await post(
        url, {"model": "rerank-v3.5", "query": "capital", "documents": docs}, TEAM_KEY
    )
    assert status == 200
    assert fake.calls[-1]["documents"] == docs[:3]
    assert sorted(r["index"] for r in answer["results"]) == [0, 1, 2]
    assert answer["results"][0]["index"] == 1  # the caller's index of "Paris is the capital"
    assert answer["meta"]["warnings"] == [
        "team 'search' sent 5 documents and its limit is max_documents=3: only the first 3 were "
        "reranked; documents 3-4 were dropped and have no results"
    ]
    # v1 with return_documents echoes the caller's documents at the caller's indices.
    status, _, answer = await post(
        url,
        {
            "query": "capital",
            "documents": [{"text": d, "id": i} for i, d in enumerate(docs)],
            "return_documents": True,
            "model": "rerank-v3.5",
        },
        TEAM_KEY,
        path="/v1/rerank",
    )
    assert status == 200
    assert sorted(r["index"] for r in answer["results"]) == [0, 1, 2]
    assert all(r["document"]["id"] == r["index"] for r in answer["results"])
    assert len(answer["results"]) == 3
    text = await metrics_text(url)
    assert (
        'rerank_overfetch_total{action="truncate",limit="max_documents",team="search"} 2.0' in text
    )


async def test_team_overrides_model_limits_which_override_global(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    data = config(upstream, search={"limits": {"max_documents": 20}}, limits={"max_documents": 10})
    data["models"]["rerank-v3.5"]["limits"] = {"max_documents": 5}
    url = start_gateway(data)
    body = {"model": "rerank-v3.5", "query": "capital", "documents": DOCS[:6]}
    status, _, answer = await post(url, body, OTHER_TEAM_KEY)  # ads: the model's 5
    assert status == 400 and "team 'ads' sent 6 documents" in answer["message"]
    assert "max_documents=5" in answer["message"]
    assert (await post(url, {**body, "documents": DOCS[:20]}, TEAM_KEY))[0] == 200  # search: 20
    body = {"model": "local-bm25", "query": "capital", "documents": DOCS[:11]}
    status, _, answer = await post(url, body, OTHER_TEAM_KEY)  # another model: global 10
    assert status == 400 and "max_documents=10" in answer["message"]


async def test_long_documents_cut_or_rejected_and_long_query_rejected(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    data = config(
        upstream,
        search={"limits": {"max_document_chars": 10, "long_documents": "truncate"}},
        limits={"max_document_chars": 10, "max_query_chars": 20},
    )
    url = start_gateway(data)
    docs = ["short", "a capital that is far too long"]
    body = {"model": "rerank-v3.5", "query": "capital", "documents": docs}
    status, _, answer = await post(url, body, TEAM_KEY)
    assert status == 200
    assert fake.calls[-1]["documents"] == ["short", "a capital "]
    assert "were cut to 10 characters (indices 1)" in answer["meta"]["warnings"][0]
    status, _, answer = await post(url, body, OTHER_TEAM_KEY)
    assert status == 400
    assert answer["message"].startswith(
        "invalid request: document too long: documents[1] has 30 characters and the limit for "
        "team 'ads' is max_document_chars=10"
    )
    status, _, answer = await post(url, {**body, "query": "q" * 21}, TEAM_KEY)
    assert status == 400
    assert "team 'search' sent a query of 21 characters" in answer["message"]


async def test_team_body_limit_is_413_with_and_without_content_length(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(config(upstream, search={"limits": {"max_body_bytes": 2048}}))
    body = {"model": "rerank-v3.5", "query": "capital", "documents": ["x" * 1000] * 3}
    status, _, answer = await post(url, body, TEAM_KEY)
    assert status == 413
    assert answer["message"] == (
        "request body too large: the limit is 2048 bytes (max_body_bytes for team 'search'); "
        "send fewer or shorter documents"
    )
    raw = aiohttp.payload.JsonPayload(body)._value

    async def chunks() -> AsyncIterator[bytes]:  # sent chunked: no Content-Length
        yield raw[:1000]
        yield raw[1000:]

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/v2/rerank",
            data=chunks(),
            headers={"Authorization": f"Bearer {TEAM_KEY}", "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 413
    assert fake.calls == []
    assert (await post(url, body, OTHER_TEAM_KEY))[0] == 200  # other teams: the server's limit
    text = await metrics_text(url)
    assert (
        'rerank_overfetch_total{action="reject",limit="max_body_bytes",team="search"} 2.0' in text
    )


async def test_usage_counts_rejected_and_truncated_requests(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    url = start_gateway(
        config(upstream, search={"limits": {"max_documents": 2, "overfetch": "truncate"}})
    )
    body = {"model": "rerank-v3.5", "query": "capital", "documents": DOCS[:3]}
    assert (await post(url, body, TEAM_KEY))[0] == 200
    assert (await post(url, {**body, "documents": DOCS[:101]}, OTHER_TEAM_KEY))[0] == 400
    status, _, report = await get(url + "/admin/usage", ADMIN_KEY)
    assert status == 200
    figures = {(r["team"], r["deployment"]): r for r in report["rows"]}
    assert figures["search", None]["truncated"] == 1
    assert figures["search", "cohere-a/rerank-v3.5"]["documents"] == 2  # what went upstream
    assert figures["ads", None]["rejected_limits"] == 1
