"""Listwise models: a document's score depends on the other documents of the request
(jina-reranker-v3 scores the whole list in one pass), so the gateway never answers one
from the per-document cache, never splits its call into sub-batches and never lets a
request join another's call for overlapping documents. The Jina fake scores v3 listwise:
each document gets its share of the list's total."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.state.catalog import Catalog
from tests.conftest import TEAM_KEY
from tests.fakes.jina import JINA_KEY, FakeJina, listwise_scores
from tests.support.selfhosted import provider_config
from tests.support.servers import ServerLoop

QUERY = "capital of France"
A = ["Paris is the capital of France", "bananas are yellow", "France has a capital", "rain"]
B = ["Paris is the capital of France", "Lyon is in France"]
AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}


@pytest.fixture
def jina(servers: ServerLoop) -> tuple[FakeJina, str]:
    fake = FakeJina(listwise=True)
    return fake, servers.serve(fake.app())


def gateway(
    start: Callable[..., str], url: str, upstream: str = "jina-reranker-v3", **model: Any
) -> str:
    # max_batch_size 2: a pointwise model's call would be cut into pairs
    settings = {"type": "jina", "base_url": url, "api_key": JINA_KEY, "max_batch_size": 2}
    return start(provider_config({"jina": settings}, "j", upstream, **model))


def scores(url: str, docs: list[str]) -> tuple[list[float], str]:
    answer = httpx.post(
        url + "/v2/rerank", json={"model": "j", "query": QUERY, "documents": docs}, headers=AUTH
    )
    assert answer.status_code == 200
    by_index = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    return [by_index[i] for i in range(len(docs))], answer.headers["X-Cache"]


def test_a_listwise_score_is_never_taken_from_another_list(
    jina: tuple[FakeJina, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = jina
    gw = gateway(start_gateway, url)
    in_a, cache_a = scores(gw, A)
    in_b, cache_b = scores(gw, B)
    assert in_a == listwise_scores(QUERY, A)
    # B's first document is A's first, with B's own score (a cached one would be A's).
    assert in_b == listwise_scores(QUERY, B) and in_b[0] != in_a[0]
    assert cache_a == cache_b == "bypass"
    # Each call whole, though the provider splits pointwise calls into pairs.
    assert [call["documents"] for call in fake.calls] == [A, B]


def test_identical_requests_both_go_upstream(
    jina: tuple[FakeJina, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = jina
    gw = gateway(start_gateway, url)
    assert scores(gw, A) == scores(gw, A)
    assert len(fake.calls) == 2


async def test_overlapping_concurrent_requests_are_not_coalesced(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    # The fake holds each call until both are in: both requests are in flight together.
    fake = FakeJina(listwise=True, rendezvous=2)
    gw = gateway(start_gateway, servers.serve(fake.app()))
    async with httpx.AsyncClient(timeout=15) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    gw + "/v2/rerank",
                    json={"model": "j", "query": QUERY, "documents": docs},
                    headers=AUTH,
                )
                for docs in (A, B)
            )
        )
    assert [a.status_code for a in answers] == [200, 200]
    # B did not join A's call for the document they share: each sent its whole list.
    assert sorted(map(tuple, (call["documents"] for call in fake.calls))) == sorted(
        [tuple(A), tuple(B)]
    )


def test_pointwise_models_are_cached_and_split_as_before(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeJina()  # jina-reranker-v2 is a pointwise cross-encoder
    gw = gateway(start_gateway, servers.serve(fake.app()), "jina-reranker-v2-base-multilingual")
    assert scores(gw, A)[1] == "miss"
    assert [len(call["documents"]) for call in fake.calls] == [2, 2]
    assert scores(gw, B)[1] == "partial"
    assert scores(gw, A)[1] == "hit"


def test_the_config_can_say_otherwise(
    jina: tuple[FakeJina, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = jina
    gw = gateway(start_gateway, url, scoring="pointwise")  # the operator's word wins
    assert scores(gw, A)[1] == "miss"
    assert scores(gw, A)[1] == "hit"
    assert [len(call["documents"]) for call in fake.calls] == [2, 2]


@pytest.mark.parametrize(
    ("provider", "upstream", "scoring", "listwise"),
    [
        ({"type": "jina", "api_key": "k"}, "jina-reranker-v3", None, True),
        ({"type": "jina", "api_key": "k"}, "jina-reranker-v3.5", None, True),
        ({"type": "jina", "api_key": "k"}, "jina-reranker-m0", None, False),
        ({"type": "tei", "base_url": "http://tei.invalid"}, "bge", None, False),
        ({"type": "tei", "base_url": "http://tei.invalid"}, "bge", "listwise", True),
        ({"type": "local"}, "local-bm25", None, True),
    ],
)
def test_which_models_are_listwise_by_default(
    provider: dict[str, Any], upstream: str, scoring: str | None, listwise: bool
) -> None:
    model: dict[str, Any] = {"deployments": [{"provider": "p", "model": upstream}]}
    if scoring is not None:
        model["scoring"] = scoring
    data = {"auth": {"mode": "none"}, "providers": {"p": provider}, "models": {"m": model}}
    assert Catalog(parse_config(data, {})).listwise("m") is listwise
