"""The `openai_rerank` provider in its two shapes: Cohere-style `/v1/rerank` against the
Together fake, and DeepInfra's pairwise `/v1/inference/{model}` (parallel `queries` and
`documents` in, scores in input order out)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.config import ConfigError, parse_config
from tests.fakes.cohere import Faults, fake_score
from tests.fakes.openai_rerank import (
    DEEPINFRA_KEY,
    QWEN,
    TOGETHER_KEY,
    FakeDeepInfra,
    FakeTogether,
)
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


@pytest.fixture
def together(servers: ServerLoop) -> tuple[FakeTogether, str]:
    fake = FakeTogether()
    return fake, servers.serve(fake.app())


@pytest.fixture
def deepinfra(servers: ServerLoop) -> tuple[FakeDeepInfra, str]:
    fake = FakeDeepInfra()
    return fake, servers.serve(fake.app())


def together_settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "openai_rerank", "base_url": url, "api_key": TOGETHER_KEY, "timeout_s": 5, **more}


def deepinfra_settings(url: str, **more: object) -> dict[str, object]:
    return {
        "type": "openai_rerank",
        "shape": "pairwise",
        "base_url": url,
        "api_key": DEEPINFRA_KEY,
        "timeout_s": 5,
        **more,
    }


def test_cohere_shape_serves_v2_and_v1(
    together: tuple[FakeTogether, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = together
    data = uncached(provider_config({"together": together_settings(url)}, "qwen3", QWEN))
    gateway = start_gateway(data)
    scores = serves_v2_and_v1(gateway, "qwen3", DOCS, expected_order(QUERY, DOCS), scale=None)
    assert scores == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls[0] == {"model": QWEN, "query": QUERY, "documents": DOCS}
    assert fake.headers[0]["Authorization"] == f"Bearer {TOGETHER_KEY}"
    assert fake.requested == ["/v1/rerank"] * 2


def test_pairwise_shape_serves_v2_and_v1(
    deepinfra: tuple[FakeDeepInfra, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = deepinfra
    data = uncached(provider_config({"di": deepinfra_settings(url)}, "qwen3", QWEN))
    gateway = start_gateway(data)
    scores = serves_v2_and_v1(gateway, "qwen3", DOCS, expected_order(QUERY, DOCS), scale=None)
    assert scores == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls[0] == {"queries": [QUERY] * len(DOCS), "documents": DOCS}
    assert fake.requested == [f"/v1/inference/{QWEN}"] * 2  # the model id keeps its slash


def test_usage_of_both_shapes(
    together: tuple[FakeTogether, str], deepinfra: tuple[FakeDeepInfra, str], servers: ServerLoop
) -> None:
    _, together_url = together
    opts = {"base_url": together_url, "api_key": TOGETHER_KEY}
    assert direct(servers, "openai_rerank", opts, DOCS, model=QWEN).tokens == token_count(
        QUERY, *DOCS
    )
    _, deepinfra_url = deepinfra
    opts = {"base_url": deepinfra_url, "api_key": DEEPINFRA_KEY, "shape": "pairwise", "max_batch_size": 4}
    result = direct(servers, "openai_rerank", opts, DOCS, model=QWEN)
    assert result.scores == [fake_score(QUERY, d) for d in DOCS]
    assert result.tokens == sum(token_count(QUERY, d) for d in DOCS)


def test_a_single_query_is_refused_by_the_pairwise_fake(
    deepinfra: tuple[FakeDeepInfra, str], servers: ServerLoop
) -> None:
    _, url = deepinfra
    opts = {"base_url": url, "api_key": DEEPINFRA_KEY, "shape": "pairwise", "repeat_query": False}
    with pytest.raises(Exception, match="same length"):
        direct(servers, "openai_rerank", opts, DOCS, model=QWEN)


def test_errors_of_both_hosts(
    together: tuple[FakeTogether, str],
    deepinfra: tuple[FakeDeepInfra, str],
    start_gateway: Callable[..., str],
) -> None:
    fake, url = together
    body = {"query": QUERY, "documents": DOCS}
    wrong = start_gateway(provider_config({"t": together_settings(url, api_key="x")}, "m", QWEN))
    resp = post_sync(wrong, {"model": "m", **body})
    assert resp.status_code == 502
    assert "t answered 401: Invalid API key provided" in resp.json()["message"]
    fake.faults = Faults(status=429, retry_after="6")
    resp = post_sync(start_gateway(provider_config({"t": together_settings(url)}, "m", QWEN)), {"model": "m", **body})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "6"
    _, di_url = deepinfra
    unknown = start_gateway(provider_config({"di": deepinfra_settings(di_url)}, "m", "Qwen/Nope"))
    resp = post_sync(unknown, {"model": "m", **body})
    assert resp.status_code == 502
    assert "di answered 404: Model is not available: Qwen/Nope" in resp.json()["message"]


def test_a_key_is_required() -> None:
    data = provider_config({"h": {"type": "openai_rerank", "base_url": "https://x", "api_key": ""}}, "m", "m")
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "providers.h" in str(info.value) and "api_key must not be empty" in str(info.value)
