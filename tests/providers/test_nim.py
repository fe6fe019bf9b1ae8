"""The `nim` provider against the strict NIM fake: nested `query`/`passages` bodies,
`rankings[{index, logit}]` mapped by sigmoid (or passed on raw), the passage limit."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from providers.nim import sigmoid
from tests.fakes.cohere import fake_score
from tests.fakes.nim import SERVED_MODEL, FakeNim, logit_of
from tests.support.clouds import client, expected_order
from tests.support.selfhosted import MANY_DOCS, QUERY, post_sync, provider_config
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:9]


@pytest.fixture
def nim(servers: ServerLoop) -> tuple[FakeNim, str]:
    fake = FakeNim()
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "nim", "base_url": url, "timeout_s": 5, **more}


def test_sigmoid_scores_by_default(
    nim: tuple[FakeNim, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = nim
    gateway = start_gateway(provider_config({"nim": settings(url)}, "nv", SERVED_MODEL))
    res = client(gateway).rerank(model="nv", query=QUERY, documents=DOCS, top_n=4)
    assert [r.index for r in res.results] == expected_order(QUERY, DOCS)[:4]
    for r in res.results:  # the fake's logit is the log-odds of its score
        assert r.relevance_score == pytest.approx(fake_score(QUERY, DOCS[r.index]), abs=1e-6)
    assert fake.calls == [
        {
            "model": SERVED_MODEL,
            "query": {"text": QUERY},
            "passages": [{"text": d} for d in DOCS],
            "truncate": "END",
        }
    ]
    assert "Authorization" not in fake.headers[0]  # self-hosted NIM: no key


def test_raw_logits_on_request(nim: tuple[FakeNim, str], start_gateway: Callable[..., str]) -> None:
    fake, url = nim
    data = provider_config(
        {"nim": settings(url, score="logit", truncate="NONE")}, "nv", SERVED_MODEL
    )
    body = {"model": "nv", "query": QUERY, "documents": DOCS}
    results = post_sync(start_gateway(data), body).json()["results"]
    assert [r["index"] for r in results] == expected_order(QUERY, DOCS)
    assert [r["relevance_score"] for r in results] == [
        pytest.approx(logit_of(fake_score(QUERY, DOCS[r["index"]]))) for r in results
    ]
    assert min(r["relevance_score"] for r in results) < 0  # unbounded, as NIM gives them
    assert fake.calls[0]["truncate"] == "NONE"


def test_passages_split_at_max_batch_size(
    nim: tuple[FakeNim, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = nim
    fake.max_passages = 4
    data = provider_config(
        {"nim": settings(url, max_batch_size=4, api_key="nvapi-x")}, "nv", SERVED_MODEL
    )
    res = client(start_gateway(data)).rerank(model="nv", query=QUERY, documents=DOCS)
    assert [r.index for r in res.results] == expected_order(QUERY, DOCS)
    assert sorted(len(c["passages"]) for c in fake.calls) == [1, 4, 4]
    assert fake.headers[0]["Authorization"] == "Bearer nvapi-x"


def test_the_nim_fake_refuses_cohere_shaped_bodies(nim: tuple[FakeNim, str]) -> None:
    _, url = nim
    for body in (
        {"model": SERVED_MODEL, "query": QUERY, "passages": [{"text": "a"}]},
        {"model": SERVED_MODEL, "query": {"text": QUERY}, "passages": ["a"]},
        {"model": SERVED_MODEL, "query": {"text": QUERY}, "documents": ["a"]},
    ):
        assert httpx.post(url + "/v1/ranking", json=body).status_code == 422


def test_sigmoid_is_stable_at_the_extremes() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    assert sigmoid(2.0) == pytest.approx(1 - sigmoid(-2.0))


def test_wrong_model_is_a_gateway_problem(
    nim: tuple[FakeNim, str], start_gateway: Callable[..., str]
) -> None:
    _, url = nim
    data = provider_config({"nim": settings(url)}, "nv", "nvidia/other")
    resp = post_sync(start_gateway(data), {"model": "nv", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 502
    assert "nim answered 404: Model nvidia/other not found" in resp.json()["message"]
