"""The `azure_semantic` provider against the strict Azure AI semantic reranker fake: the
camelCase body and api-version, the subscription key or an Entra ID token, token usage,
sub-batches, Azure's errors, and failover to and from a Cohere deployment."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import teams_config
from tests.fakes.azure_semantic import (
    AZURE_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    FakeAzureSemantic,
)
from tests.fakes.cohere import FakeCohere, Faults, fake_score
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
MODEL = "semantic-reranker-v1"


@pytest.fixture
def azure(servers: ServerLoop) -> tuple[FakeAzureSemantic, str]:
    fake = FakeAzureSemantic()
    return fake, servers.serve(fake.app())


def settings(url: str, **more: object) -> dict[str, object]:
    return {"type": "azure_semantic", "endpoint": url, "api_key": AZURE_KEY, "timeout_s": 5, **more}


def entra(url: str, secret: str = CLIENT_SECRET) -> dict[str, object]:
    return {
        "type": "azure_semantic",
        "endpoint": url,
        "auth": "entra",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "authority_url": url,
        "timeout_s": 5,
    }


def test_key_auth_serves_v2_and_v1(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    gateway = start_gateway(uncached(provider_config({"az": settings(url)}, "semantic", MODEL)))
    scores = serves_v2_and_v1(
        gateway, "semantic", DOCS, expected_order(QUERY, DOCS), scale="calibrated"
    )
    assert scores == expected_scores(QUERY, DOCS)[:3]
    assert fake.calls[0] == {
        "query": QUERY,
        "documents": DOCS,
        "returnDocuments": False,
        "model": MODEL,
    }
    assert fake.headers[0]["Ocp-Apim-Subscription-Key"] == AZURE_KEY
    assert "Authorization" not in fake.headers[0]
    assert fake.requested == ["/inference/semanticReranking"] * 2


def test_entra_token_is_fetched_once_and_sent_as_bearer(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    gateway = start_gateway(uncached(provider_config({"az": entra(url)}, "semantic", MODEL)))
    serves_v2_and_v1(gateway, "semantic", DOCS, expected_order(QUERY, DOCS), scale="calibrated")
    assert fake.token_requests == 1
    assert [h["Authorization"] for h in fake.headers] == ["Bearer entra-token-0"] * 2
    assert all("Ocp-Apim-Subscription-Key" not in h for h in fake.headers)


def test_a_refused_entra_client_is_a_gateway_problem_and_not_asked_again(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    gateway = start_gateway(provider_config({"az": entra(url, "wrong")}, "semantic", MODEL))
    for _ in range(2):
        resp = post_sync(gateway, {"model": "semantic", "query": QUERY, "documents": DOCS})
        assert resp.status_code == 502
        message = resp.json()["message"]
        assert (
            "az: the token endpoint answered 401 invalid_client: AADSTS7000215: Invalid client "
            "secret provided." in message
        )
        assert "a gateway configuration problem" in message
        assert "Trace ID" not in message and "wrong" not in message
    assert fake.token_requests == 1  # the refusal is remembered, not retried per request
    assert fake.calls == []


def test_total_tokens_summed_over_sub_batches(
    azure: tuple[FakeAzureSemantic, str], servers: ServerLoop
) -> None:
    fake, url = azure
    opts = {"endpoint": url, "api_key": AZURE_KEY, "max_batch_size": 4, "batch_size": 2}
    result = direct(servers, "azure_semantic", opts, DOCS, model=MODEL)
    assert sorted(len(c["documents"]) for c in fake.calls) == [2, 4, 4]
    assert all(c["batchSize"] == 2 for c in fake.calls)
    assert result.tokens == sum(token_count(QUERY, *DOCS[i : i + 4]) for i in (0, 4, 8))
    assert result.scores == [fake_score(QUERY, d) for d in DOCS]


def test_more_documents_than_the_cap_are_split_not_refused(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    fake.max_documents = 40  # the real cap is UNVERIFIED: max_batch_size follows it
    data = provider_config({"az": settings(url, max_batch_size=40)}, "semantic", MODEL)
    resp = post_sync(start_gateway(data), {"model": "semantic", "query": QUERY, "documents": MANY_DOCS})
    assert resp.status_code == 200, resp.text
    assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, MANY_DOCS)
    assert sorted(len(c["documents"]) for c in fake.calls) == [20, 40, 40]


def test_without_send_model_the_service_default_is_used(
    azure: tuple[FakeAzureSemantic, str], servers: ServerLoop
) -> None:
    fake, url = azure
    opts = {"endpoint": url, "api_key": AZURE_KEY, "send_model": False}
    direct(servers, "azure_semantic", opts, DOCS[:2], model="anything")
    assert "model" not in fake.calls[0]


def test_a_wrong_api_version_is_a_gateway_problem(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    _, url = azure
    data = provider_config({"az": settings(url, api_version="2099-01-01")}, "semantic", MODEL)
    resp = post_sync(start_gateway(data), {"model": "semantic", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 502
    message = resp.json()["message"]
    assert "az answered 400 UnsupportedApiVersionValue" in message
    assert "check providers.az.api_version" in message


def test_throttling_passes_retry_after_and_a_wrong_key_is_a_502(
    azure: tuple[FakeAzureSemantic, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    fake.faults = Faults(status=429, retry_after="4")
    gateway = start_gateway(provider_config({"az": settings(url)}, "semantic", MODEL))
    resp = post_sync(gateway, {"model": "semantic", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "4"
    assert "az answered 429 TooManyRequests: injected failure 429" in resp.json()["message"]
    fake.faults = Faults()
    wrong = start_gateway(provider_config({"az": settings(url, api_key="nope")}, "s", MODEL))
    resp = post_sync(wrong, {"model": "s", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 502
    assert "Access denied due to invalid subscription key" in resp.json()["message"]


def test_unknown_model_fails_over_to_cohere_and_back(
    azure: tuple[FakeAzureSemantic, str],
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
) -> None:
    fake, url = azure
    cohere, cohere_url = fake_cohere
    cohere_settings = {"type": "cohere", "base_url": cohere_url, "api_key": "upstream-key"}
    models = {
        # Azure first (its model id is wrong here: a 404 fails over to Cohere).
        "az-first": {
            "deployments": [
                {"provider": "az", "model": "semantic-reranker-v9", "priority": 0},
                {"provider": "cohere", "model": "rerank-v3.5", "priority": 1},
            ]
        },
        # Cohere first, throttled: the semantic reranker answers.
        "cohere-first": {
            "deployments": [
                {"provider": "cohere", "model": "rerank-v3.5", "priority": 0},
                {"provider": "az", "model": MODEL, "priority": 1},
            ]
        },
    }
    gateway = start_gateway(teams_config({"az": settings(url), "cohere": cohere_settings}, models))
    body = {"query": QUERY, "documents": DOCS}
    resp = post_sync(gateway, {"model": "az-first", **body})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == "cohere/rerank-v3.5"
    cohere.faults = Faults(status=429, retry_after="2")
    resp = post_sync(gateway, {"model": "cohere-first", **body}, "/v1/rerank")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == f"az/{MODEL}"
    assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, DOCS)
    assert len(fake.calls) == 2 and len(cohere.calls) == 2


def test_the_fake_refuses_snake_case_and_a_missing_api_version(
    azure: tuple[FakeAzureSemantic, str],
) -> None:
    _, url = azure
    headers = {"Ocp-Apim-Subscription-Key": AZURE_KEY}
    route = url + "/inference/semanticReranking"
    body = {"query": QUERY, "documents": DOCS, "top_k": 3}
    snake = httpx.post(route, params={"api-version": "2026-10-30"}, json=body, headers=headers)
    assert snake.status_code == 400
    assert snake.json()["error"]["message"] == "Unknown field 'top_k'; did you mean 'topK'?"
    missing = httpx.post(route, json={"query": QUERY, "documents": DOCS}, headers=headers)
    assert missing.headers["x-ms-error-code"] == "MissingApiVersionParameter"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"endpoint": "https://x.example"}, "api_key is required with auth: key"),
        ({"endpoint": "https://x.example", "auth": "entra"}, "auth: entra needs tenant_id"),
        ({"endpoint": "x.example", "api_key": "k"}, "endpoint must start with http"),
    ],
)
def test_config_is_validated(options: dict[str, object], problem: str) -> None:
    data = provider_config({"az": {"type": "azure_semantic", **options}}, "m", MODEL)
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert problem in str(info.value)
    assert "providers.az" in str(info.value)
