"""The Azure provider through the gateway with the real `cohere` SDK, against the Azure
fake: serverless and Foundry URL forms, both key headers, both error envelopes."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
import structlog
from cohere.core.api_error import ApiError as SdkApiError

from gateway.config import ConfigError, parse_config
from providers.azure import rerank_url
from tests.fakes.azure import AZURE_KEY, FOUNDRY_PATH, FakeAzure
from tests.fakes.cohere import Faults
from tests.support.clouds import DOCS, QUERY, client, expected_order, expected_scores, one_model
from tests.support.servers import ServerLoop

SERVERLESS = "https://cohere-rerank-v3-5-abcde.swedencentral.models.ai.azure.com"
FOUNDRY = "https://my-resource.services.ai.azure.com/providers/cohere"


@pytest.fixture
def azure(servers: ServerLoop) -> tuple[FakeAzure, str]:
    fake = FakeAzure()
    return fake, servers.serve(fake.app())


def config(url: str, model: str = "Cohere-rerank-v3.5", **settings: object) -> dict:
    provider = {"type": "azure", "base_url": url, "api_key": AZURE_KEY, "timeout_s": 5, **settings}
    return one_model("azure-swc", provider, "rerank-v3.5", model)


@pytest.mark.parametrize(
    ("base_url", "path", "expected"),
    [
        (SERVERLESS, None, SERVERLESS + "/v2/rerank"),
        (SERVERLESS + "/", None, SERVERLESS + "/v2/rerank"),
        (SERVERLESS + "/v1", None, SERVERLESS + "/v1/rerank"),
        (SERVERLESS + "/v2", None, SERVERLESS + "/v2/rerank"),
        (SERVERLESS + "/v1/rerank", None, SERVERLESS + "/v1/rerank"),
        (SERVERLESS + "/v2/rerank", None, SERVERLESS + "/v2/rerank"),
        (FOUNDRY, None, FOUNDRY + "/v2/rerank"),
        (FOUNDRY + "/v2", None, FOUNDRY + "/v2/rerank"),
        (SERVERLESS, "/custom/rerank", SERVERLESS + "/custom/rerank"),
    ],
)
def test_rerank_url_forms(base_url: str, path: str | None, expected: str) -> None:
    assert rerank_url(base_url, path) == expected


def test_serverless_endpoint_with_bearer_key(
    azure: tuple[FakeAzure, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    fake.search_units = 7  # whatever Azure bills is passed on, not estimated
    raw = client(start_gateway(config(url))).with_raw_response.rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2
    )
    assert [r.index for r in raw.data.results] == expected_order()[:2]
    assert [r.relevance_score for r in raw.data.results] == expected_scores()[:2]
    assert raw.data.meta.billed_units.search_units == 7
    assert raw.headers["x-rerank-deployment"] == "azure-swc/Cohere-rerank-v3.5"
    assert fake.paths == ["/v2/rerank"]
    assert fake.calls == [{"model": "Cohere-rerank-v3.5", "query": QUERY, "documents": DOCS}]
    assert fake.headers[0]["Authorization"] == f"Bearer {AZURE_KEY}"
    assert "api-key" not in fake.headers[0]


def test_foundry_resource_with_api_key_header_behind_a_private_endpoint(
    azure: tuple[FakeAzure, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    data = config(FOUNDRY, "Cohere-rerank-v4.0-pro", endpoint_url=url, auth_header="api-key")
    res = client(start_gateway(data)).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=512
    )
    assert [r.index for r in res.results] == expected_order()
    assert fake.paths == [FOUNDRY_PATH]
    assert fake.calls == [
        {
            "model": "Cohere-rerank-v4.0-pro",
            "query": QUERY,
            "documents": DOCS,
            "max_tokens_per_doc": 512,
        }
    ]
    assert fake.headers[0]["api-key"] == AZURE_KEY
    assert "Authorization" not in fake.headers[0]


def test_explicit_v1_route_gets_a_body_v1_accepts(
    azure: tuple[FakeAzure, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    res = client(start_gateway(config(url + "/v1"))).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=512
    )
    assert [r.index for r in res.results] == expected_order()
    assert fake.paths == ["/v1/rerank"]
    assert fake.calls == [{"model": "Cohere-rerank-v3.5", "query": QUERY, "documents": DOCS}]


@pytest.mark.parametrize("envelope", ["cohere", "azure"])
@pytest.mark.parametrize(
    ("faults", "status", "needle", "retry_after"),
    [
        (Faults(status=429, retry_after="2"), 429, "azure-swc answered 429", "2"),
        (Faults(status=500), 503, "azure-swc answered 500", "1"),
        (Faults(status=503), 503, "azure-swc answered 503", "1"),
        (
            Faults(status=400),
            400,
            "the upstream rejected the request: azure-swc answered 400",
            None,
        ),
    ],
)
def test_azure_errors_in_both_envelopes(
    azure: tuple[FakeAzure, str],
    start_gateway: Callable[..., str],
    envelope: str,
    faults: Faults,
    status: int,
    needle: str,
    retry_after: str | None,
) -> None:
    fake, url = azure
    fake.envelope = envelope  # type: ignore[assignment]
    fake.faults = faults
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url))).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.status_code == status
    assert needle in info.value.body["message"]
    assert (
        f"injected failure {faults.status}" in info.value.body["message"]
    )  # parsed from either shape
    assert info.value.headers.get("retry-after") == retry_after


@pytest.mark.parametrize("envelope", ["cohere", "azure"])
@pytest.mark.parametrize("auth_header", ["authorization", "api-key"])
def test_wrong_key_is_a_502_naming_the_deployment_and_a_warning(
    azure: tuple[FakeAzure, str], start_gateway: Callable[..., str], envelope: str, auth_header: str
) -> None:
    fake, url = azure
    fake.envelope = envelope  # type: ignore[assignment]
    data = config(url, auth_header=auth_header)
    data["providers"]["azure-swc"]["api_key"] = "revoked-key"
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        client(start_gateway(data)).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    message = info.value.body["message"]
    assert info.value.status_code == 502
    assert "azure-swc answered 401" in message
    assert "deployment 'azure-swc/Cohere-rerank-v3.5'" in message
    warnings = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert [(w["deployment"], w["status"]) for w in warnings] == [
        ("azure-swc/Cohere-rerank-v3.5", 401)
    ]
    assert warnings[0]["upstream_request_id"]  # apim-request-id
    assert "revoked-key" not in repr(logs) and "revoked-key" not in message


def test_slow_azure_hits_the_timeout(
    azure: tuple[FakeAzure, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = azure
    fake.faults = Faults(hang=True)
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url, timeout_s=0.2))).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    assert info.value.status_code == 504
    assert "azure-swc did not answer within 0.2 s" in info.value.body["message"]


def test_azure_fake_keeps_coheres_strictness(
    azure: tuple[FakeAzure, str], servers: ServerLoop
) -> None:
    """What litellm sends to /v2/rerank (`return_documents`) is refused, as Cohere v2 does."""
    _, url = azure

    async def post() -> tuple[int, dict]:
        body = {"model": "m", "query": "q", "documents": ["d"], "return_documents": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/v2/rerank", json=body, headers={"api-key": AZURE_KEY}) as resp,
        ):
            return resp.status, await resp.json()

    status, body = servers.run(post())
    assert status == 422
    assert "unknown field: parameter 'return_documents'" in body["message"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"base_url": "ftp://x"}, "base_url must start with http:// or https://"),
        (
            {"base_url": FOUNDRY, "endpoint_url": "http://10.0.0.1/providers"},
            "endpoint_url replaces only the scheme and host",
        ),
        (
            {"base_url": FOUNDRY, "auth_header": "x-key"},
            "auth_header: must be one of authorization, api-key",
        ),
        ({"base_url": FOUNDRY, "path": "v2/rerank"}, "path must start with /"),
        ({}, "providers.az.base_url: is required"),
    ],
)
def test_azure_config_is_validated(settings: dict, problem: str) -> None:
    data = one_model("az", {"type": "azure", **settings}, "m", "m")
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert problem in str(info.value)
