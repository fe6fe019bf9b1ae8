"""The `vllm` provider against the strict vLLM fake: the key on `/v1/rerank` (vLLM does
not guard plain `/rerank`), echoed documents skipped, usage tokens, errors and failover."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from cohere.core.api_error import ApiError as SdkApiError
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import ConfigError, parse_config
from providers.http import HttpResponse
from providers.types import MALFORMED, ProviderError
from providers.vllm import VllmOptions, VllmProvider
from tests.fakes.cohere import Faults, fake_score
from tests.fakes.strict import token_count
from tests.fakes.tei import FakeTei
from tests.fakes.vllm import SERVED_MODEL, FakeVllm
from tests.support.clouds import client, expected_order, expected_scores
from tests.support.selfhosted import MANY_DOCS, QUERY, direct, post_sync, provider_config
from tests.support.servers import ServerLoop

KEY = "vllm-secret"
DOCS = MANY_DOCS[:12]


@pytest.fixture
def vllm(servers: ServerLoop) -> tuple[FakeVllm, str]:
    fake = FakeVllm(api_key=KEY)
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "vllm", "base_url": url, "api_key": KEY, "timeout_s": 5, **more}


def test_rerank_on_v1_with_the_key(
    vllm: tuple[FakeVllm, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = vllm
    gateway = start_gateway(provider_config({"vllm": settings(url)}, "bge", SERVED_MODEL))
    raw = client(gateway).with_raw_response.rerank(
        model="bge", query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=256
    )
    assert [r.index for r in raw.data.results] == expected_order(QUERY, DOCS)[:3]
    assert [r.relevance_score for r in raw.data.results] == expected_scores(QUERY, DOCS)[:3]
    assert fake.requested == ["/v1/rerank"]
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert fake.calls == [
        {"model": SERVED_MODEL, "query": QUERY, "documents": DOCS, "max_tokens_per_doc": 256}
    ]
    assert raw.headers["x-rerank-deployment"] == f"vllm/{SERVED_MODEL}"


def test_echoed_documents_reach_the_caller_only_when_asked(
    vllm: tuple[FakeVllm, str], start_gateway: Callable[..., str]
) -> None:
    _, url = vllm
    gateway = start_gateway(provider_config({"vllm": settings(url)}, "bge", SERVED_MODEL))
    body = {"model": "bge", "query": QUERY, "documents": DOCS, "top_n": 2}
    assert all("document" not in r for r in post_sync(gateway, body).json()["results"])
    asked = post_sync(gateway, {**body, "return_documents": True}, "/v1/rerank").json()["results"]
    assert [r["document"] for r in asked] == [{"text": DOCS[r["index"]]} for r in asked]


def test_usage_prompt_tokens_is_reported(vllm: tuple[FakeVllm, str], servers: ServerLoop) -> None:
    _, url = vllm
    result = direct(servers, "vllm", {"base_url": url, "api_key": KEY}, DOCS, model=SERVED_MODEL)
    assert result.tokens == token_count(QUERY, *DOCS)
    assert result.scores == [pytest.approx(s) for s in _fake_scores(DOCS)]


def _fake_scores(docs: list[str]) -> list[float]:
    return [fake_score(QUERY, d) for d in docs]


def test_the_fake_leaves_plain_rerank_unguarded_as_vllm_does(
    vllm: tuple[FakeVllm, str], servers: ServerLoop
) -> None:
    """Why the provider refuses the plain path: the server's key does not cover it."""
    _, url = vllm
    body = {"model": SERVED_MODEL, "query": QUERY, "documents": DOCS[:2]}
    assert httpx.post(url + "/rerank", json=body).status_code == 200
    refused = httpx.post(url + "/v1/rerank", json=body)
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})


def test_plain_rerank_path_is_refused_in_the_config() -> None:
    data = provider_config(
        {"v": {"type": "vllm", "base_url": "http://vllm:8000", "path": "/rerank"}}, "bge", "m"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "path must end in /v1/rerank or /v2/rerank" in str(info.value)
    assert "--api-key does not guard its plain /rerank route" in str(info.value)
    assert VllmOptions(base_url="http://vllm:8000", path="/v2/rerank").path == "/v2/rerank"


def test_unknown_model_is_a_gateway_problem_and_fails_over_to_tei(
    vllm: tuple[FakeVllm, str], servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake, url = vllm
    tei = FakeTei()
    tei_url = servers.serve(tei.app())
    providers = {"vllm": settings(url), "tei": {"type": "tei", "base_url": tei_url, "timeout_s": 5}}
    data = provider_config(providers, "bge", "BAAI/bge-reranker-large")  # vLLM serves another
    resp = post_sync(start_gateway(data), {"model": "bge", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == "tei/BAAI/bge-reranker-large"
    assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, DOCS)
    assert len(fake.calls) == 1 and len(tei.calls) == 1
    alone = start_gateway(
        provider_config({"vllm": settings(url)}, "bge", "BAAI/bge-reranker-large")
    )
    with pytest.raises(SdkApiError) as info:
        client(alone).rerank(model="bge", query=QUERY, documents=DOCS)
    assert info.value.status_code == 502
    assert "vllm answered 404" in info.value.body["message"]
    assert "The model `BAAI/bge-reranker-large` does not exist." in info.value.body["message"]


@pytest.mark.parametrize(("status", "caller"), [(400, 400), (500, 503), (429, 429)])
def test_openai_shaped_errors(
    vllm: tuple[FakeVllm, str], start_gateway: Callable[..., str], status: int, caller: int
) -> None:
    fake, url = vllm
    fake.faults = Faults(status=status)
    gateway = start_gateway(provider_config({"vllm": settings(url)}, "bge", SERVED_MODEL))
    resp = post_sync(gateway, {"model": "bge", "query": QUERY, "documents": DOCS})
    assert resp.status_code == caller
    kind = "InternalServerError" if status >= 500 else "BadRequestError"
    assert f"vllm answered {status} {kind}: injected failure {status}" in resp.json()["message"]


def _provider() -> VllmProvider:
    return VllmProvider("v", VllmOptions(base_url="http://vllm:8000"))


def _answer(body: bytes) -> HttpResponse:
    return HttpResponse(200, CIMultiDictProxy(CIMultiDict()), body)


def test_any_echo_shape_is_skipped_and_bad_ranks_are_malformed() -> None:
    body = (
        b'{"id":"r","model":"m","usage":{"prompt_tokens":9},"results":['
        b'{"index":1,"document":{"multi_modal":[{"type":"image_url"}]},"relevance_score":0.5},'
        b'{"index":0,"document":"plain string","relevance_score":1}]}'
    )
    result = _provider().parse(_answer(body), 2)
    assert (result.scores, result.tokens) == ([1.0, 0.5], 9)
    for bad in (
        b'{"results":[{"index":0,"relevance_score":0.1},{"index":0,"relevance_score":0.2}]}',
        b'{"results":[{"index":"0","relevance_score":0.1},{"index":1,"relevance_score":0.2}]}',
        b'{"results":[{"index":true,"relevance_score":0.1},{"index":1,"relevance_score":0.2}]}',
        b'{"data":[]}',
        b"[1, 2",
    ):
        with pytest.raises(ProviderError) as info:
            _provider().parse(_answer(bad), 2)
        assert info.value.kind == MALFORMED and info.value.retryable
