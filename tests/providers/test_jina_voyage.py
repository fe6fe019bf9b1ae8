"""The hosted `jina` and `voyage` providers against their strict fakes: required keys,
the bodies each accepts (Voyage: never `top_n`, no empty strings), usage tokens, errors
and failover."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from tests.fakes.cohere import Faults
from tests.fakes.jina import JINA_KEY, FakeJina
from tests.fakes.strict import token_count
from tests.fakes.voyage import VOYAGE_KEY, FakeVoyage
from tests.support.clouds import client, expected_order, expected_scores
from tests.support.selfhosted import MANY_DOCS, QUERY, direct, post_sync, provider_config
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:10]


@pytest.fixture
def jina(servers: ServerLoop) -> tuple[FakeJina, str]:
    fake = FakeJina()
    return fake, servers.serve(fake.app())


@pytest.fixture
def voyage(servers: ServerLoop) -> tuple[FakeVoyage, str]:
    fake = FakeVoyage()
    return fake, servers.serve(fake.app())


def jina_settings(url: str, key: str = JINA_KEY) -> dict[str, object]:
    return {"type": "jina", "base_url": url, "api_key": key, "timeout_s": 5}


def voyage_settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "voyage", "base_url": url, "api_key": VOYAGE_KEY, "timeout_s": 5, **more}


# ---------------------------------------------------------------------------------- Jina


def test_jina_scores_only_with_the_key(
    jina: tuple[FakeJina, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = jina
    data = provider_config({"jina": jina_settings(url)}, "jina-v3", "jina-reranker-v3")
    raw = client(start_gateway(data)).with_raw_response.rerank(
        model="jina-v3", query=QUERY, documents=DOCS, top_n=3
    )
    assert [r.index for r in raw.data.results] == expected_order(QUERY, DOCS)[:3]
    assert [r.relevance_score for r in raw.data.results] == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls == [
        {"model": "jina-reranker-v3", "query": QUERY, "documents": DOCS, "return_documents": False}
    ]
    assert fake.headers[0]["Authorization"] == f"Bearer {JINA_KEY}"
    assert fake.requested == ["/v1/rerank"]


def test_jina_reports_total_tokens(jina: tuple[FakeJina, str], servers: ServerLoop) -> None:
    _, url = jina
    result = direct(
        servers, "jina", {"base_url": url, "api_key": JINA_KEY}, DOCS, model="jina-reranker-v3"
    )
    assert result.tokens == token_count(QUERY, *DOCS)


def test_jina_wrong_key_fails_over_and_alone_is_a_502(
    jina: tuple[FakeJina, str], servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    _, url = jina
    other = FakeJina()
    other_url = servers.serve(other.app())
    providers = {"jina-a": jina_settings(url, "revoked"), "jina-b": jina_settings(other_url)}
    resp = post_sync(
        start_gateway(provider_config(providers, "j", "jina-reranker-v3")),
        {"model": "j", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 200
    assert resp.headers["x-rerank-deployment"] == "jina-b/jina-reranker-v3"
    alone = provider_config({"jina-a": jina_settings(url, "revoked")}, "j", "jina-reranker-v3")
    resp = post_sync(start_gateway(alone), {"model": "j", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 502
    assert "jina-a answered 401" in resp.json()["message"]
    assert "revoked" not in resp.text


def test_jina_422_detail_reaches_the_caller(
    jina: tuple[FakeJina, str], start_gateway: Callable[..., str]
) -> None:
    _, url = jina
    data = provider_config({"jina": jina_settings(url)}, "j", "jina-reranker-v9")
    resp = post_sync(start_gateway(data), {"model": "j", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 422
    assert "jina answered 422: model must be one of jina-reranker-v3" in resp.json()["message"]


@pytest.mark.parametrize("type_name", ["jina", "voyage"])
def test_hosted_keys_are_required(type_name: str) -> None:
    data = provider_config({"h": {"type": type_name}}, "m", "m")
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "providers.h.api_key: is required" in str(info.value)
    data["providers"]["h"]["api_key"] = ""
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "api_key must not be empty" in str(info.value)


# -------------------------------------------------------------------------------- Voyage


def test_voyage_gets_neither_top_n_nor_top_k(
    voyage: tuple[FakeVoyage, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = voyage
    data = provider_config({"voyage": voyage_settings(url)}, "voyage-2.5", "rerank-2.5")
    body = {
        "model": "voyage-2.5",
        "query": QUERY,
        "documents": DOCS,
        "top_n": 2,
        "return_documents": True,
    }
    resp = post_sync(start_gateway(data), body, "/v1/rerank")
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["index"] for r in results] == expected_order(QUERY, DOCS)[:2]
    assert [r["document"] for r in results] == [{"text": DOCS[r["index"]]} for r in results]
    assert fake.calls == [
        {
            "model": "rerank-2.5",
            "query": QUERY,
            "documents": DOCS,
            "return_documents": False,
            "truncation": True,
        }
    ]


def test_the_voyage_fake_refuses_top_n_and_empty_strings(voyage: tuple[FakeVoyage, str]) -> None:
    _, url = voyage
    auth = {"Authorization": f"Bearer {VOYAGE_KEY}"}
    body = {"model": "rerank-2.5", "query": QUERY, "documents": DOCS}
    top_n = httpx.post(url + "/v1/rerank", json={**body, "top_n": 2}, headers=auth)
    assert top_n.status_code == 400
    assert "Argument 'top_n' is not supported by our API" in top_n.json()["detail"]
    empty = httpx.post(url + "/v1/rerank", json={**body, "documents": ["a", ""]}, headers=auth)
    assert (empty.status_code, empty.json()["detail"]) == (
        400,
        "Input cannot contain empty strings or empty lists",
    )


def test_voyage_empty_documents_score_zero_and_are_not_sent(
    voyage: tuple[FakeVoyage, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = voyage
    gateway = start_gateway(provider_config({"voyage": voyage_settings(url)}, "v", "rerank-2.5"))
    docs = ["", DOCS[3], "", DOCS[1]]
    res = client(gateway).rerank(model="v", query=QUERY, documents=docs)
    assert fake.calls[0]["documents"] == [DOCS[3], DOCS[1]]
    by_index = {r.index: r.relevance_score for r in res.results}
    assert by_index[0] == by_index[2] == 0.0
    assert [r.index for r in res.results][:2] == [
        [1, 3][i]
        for i in expected_order(QUERY, [DOCS[3], DOCS[1]])  # positions in `docs`
    ]
    only_empty = client(gateway).rerank(model="v", query=QUERY, documents=["", ""])
    assert [r.relevance_score for r in only_empty.results] == [0.0, 0.0]
    assert len(fake.calls) == 1  # nothing to score: no upstream call


def test_voyage_tokens_and_splitting(voyage: tuple[FakeVoyage, str], servers: ServerLoop) -> None:
    fake, url = voyage
    opts = {"base_url": url, "api_key": VOYAGE_KEY, "max_batch_size": 4}
    result = direct(servers, "voyage", opts, DOCS, model="rerank-2.5")
    assert sorted(len(c["documents"]) for c in fake.calls) == [2, 4, 4]
    assert result.tokens == sum(token_count(QUERY, *DOCS[i : i + 4]) for i in (0, 4, 8))


def test_voyage_throttling_fails_over_then_is_a_429(
    voyage: tuple[FakeVoyage, str], servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake, url = voyage
    fake.faults = Faults(status=429, retry_after="7")
    other = FakeVoyage()
    providers = {
        "voyage-a": voyage_settings(url),
        "voyage-b": voyage_settings(servers.serve(other.app())),
    }
    resp = post_sync(
        start_gateway(provider_config(providers, "v", "rerank-2.5")),
        {"model": "v", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 200
    assert resp.headers["x-rerank-deployment"] == "voyage-b/rerank-2.5"
    alone = provider_config({"voyage-a": voyage_settings(url)}, "v", "rerank-2.5")
    resp = post_sync(start_gateway(alone), {"model": "v", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert "voyage-a answered 429: injected failure 429" in resp.json()["message"]


def test_voyage_batch_size_is_capped_at_its_limit() -> None:
    data = provider_config(
        {"v": {"type": "voyage", "api_key": "k", "max_batch_size": 2000}}, "m", "m"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "providers.v.max_batch_size: must be at most 1000" in str(info.value)
