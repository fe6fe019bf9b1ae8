"""The `llamacpp` provider against the llama-server fake: raw logits (or their sigmoid),
the optional key, and its errors: 501 without `--reranking`, 503 while loading, the
500 for a pair over the physical batch (not retried)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.cohere import fake_score
from tests.fakes.llamacpp import FakeLlamaCpp
from tests.fakes.nim import logit_of
from tests.fakes.strict import token_count
from tests.support.clouds import expected_order
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
MODEL = "bge-reranker-v2-m3"


def serve(servers: ServerLoop, **fake_options: object) -> tuple[FakeLlamaCpp, str]:
    fake = FakeLlamaCpp(**fake_options)  # type: ignore[arg-type]
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "llamacpp", "base_url": url, "timeout_s": 5, **more}


def test_serves_v2_and_v1_with_raw_logits(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake, url = serve(servers)
    data = uncached(provider_config({"llama": settings(url)}, "bge", MODEL))
    scores = serves_v2_and_v1(
        start_gateway(data), "bge", DOCS, expected_order(QUERY, DOCS), scale="logit"
    )
    best = expected_order(QUERY, DOCS)[:3]
    assert scores == [pytest.approx(logit_of(fake_score(QUERY, DOCS[i]))) for i in best]
    assert fake.calls[0] == {"model": MODEL, "query": QUERY, "documents": DOCS}
    assert "Authorization" not in fake.headers[0]
    assert fake.requested == ["/v1/rerank"] * 2


def test_sigmoid_scores_the_key_and_tokens(servers: ServerLoop) -> None:
    fake, url = serve(servers, api_key="llama-key")
    opts = {"base_url": url, "api_key": "llama-key", "score": "sigmoid"}
    result = direct(servers, "llamacpp", opts, DOCS, model=MODEL)
    assert result.scores == [pytest.approx(fake_score(QUERY, d), abs=1e-6) for d in DOCS]
    assert result.tokens == token_count(QUERY, *DOCS)
    assert fake.headers[0]["Authorization"] == "Bearer llama-key"


def test_a_server_without_reranking_is_a_gateway_problem(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    _, url = serve(servers, reranking=False)
    resp = post_sync(
        start_gateway(provider_config({"llama": settings(url)}, "bge", MODEL)),
        {"model": "bge", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 502
    message = resp.json()["message"]
    assert "llama answered 501 not_supported_error" in message
    assert "start llama-server with --reranking" in message
    assert "a gateway configuration problem" in message


def test_loading_is_retryable_and_fails_over(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    _, loading = serve(servers, loading=True)
    ready, ready_url = serve(servers)
    data = provider_config({"a": settings(loading), "b": settings(ready_url)}, "bge", MODEL)
    resp = post_sync(start_gateway(data), {"model": "bge", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == f"b/{MODEL}"
    assert len(ready.calls) == 1


def test_a_document_over_the_physical_batch_is_not_retried(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    first, url = serve(servers, n_ubatch=20)
    second, other = serve(servers, n_ubatch=20)
    data = provider_config({"a": settings(url), "b": settings(other)}, "bge", MODEL)
    long_doc = " ".join(["word"] * 40)
    resp = post_sync(start_gateway(data), {"model": "bge", "query": QUERY, "documents": [long_doc]})
    assert resp.status_code == 502
    message = resp.json()["message"]
    assert "is too large to process" in message
    assert "start llama-server with a larger -ub and -b" in message
    assert len(first.calls) == 1 and second.calls == []  # no retry, no failover
