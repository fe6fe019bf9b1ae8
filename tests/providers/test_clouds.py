"""The cloud providers as an operator configures them: the documented YAML loads, and a
model spread over clouds fails over from one to the other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from cohere.core.api_error import ApiError as SdkApiError

from gateway.config import load_config
from providers.azure import AzureProvider
from providers.bedrock import BedrockProvider
from providers.oci import OciProvider
from providers.registry import build_provider
from tests.conftest import teams_config
from tests.fakes.azure import AZURE_KEY, FakeAzure
from tests.fakes.bedrock import ACCESS_KEY, SECRET_KEY, AwsFaults, FakeBedrock
from tests.fakes.cohere import Faults
from tests.support.clouds import DOCS, QUERY, client, expected_order, isolate_aws
from tests.support.servers import ServerLoop

README_CONFIG = """
auth: {mode: none}
providers:
  bedrock-use1: {type: bedrock, region: us-east-1}
  azure-swc:    {type: azure, base_url: "https://cohere-rerank-v3-5-abcde.swedencentral.models.ai.azure.com", api_key: "${AZURE_RERANK_KEY}"}
  azure-fdry:   {type: azure, base_url: "https://my-resource.services.ai.azure.com/providers/cohere", api_key: "${AZURE_FOUNDRY_KEY}"}
  oci-ord:      {type: oci, region: us-chicago-1, compartment_id: "ocid1.compartment.oc1..aaaa", auth: config_file, profile: DEFAULT}
models:
  rerank-v3.5:
    deployments:
      - {provider: bedrock-use1, model: "cohere.rerank-v3-5:0"}
      - {provider: azure-swc, model: Cohere-rerank-v3.5}
  rerank-v4.0-pro:
    deployments:
      - {provider: azure-fdry, model: Cohere-rerank-v4.0-pro}
      - {provider: oci-ord, model: cohere.rerank-v4.0-pro}
"""


def test_the_documented_config_loads_without_touching_any_cloud(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(README_CONFIG)
    config = load_config(path, {"AZURE_RERANK_KEY": "k1", "AZURE_FOUNDRY_KEY": "k2"})
    assert {n: p.type for n, p in config.providers.items()} == {
        "bedrock-use1": "bedrock",
        "azure-swc": "azure",
        "azure-fdry": "azure",
        "oci-ord": "oci",
    }
    built = {n: build_provider(n, p.type, p.options) for n, p in config.providers.items()}
    bedrock, swc, fdry, oci = (
        built[n] for n in ("bedrock-use1", "azure-swc", "azure-fdry", "oci-ord")
    )
    assert isinstance(bedrock, BedrockProvider)
    assert bedrock.url("cohere.rerank-v3-5:0") == (
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/cohere.rerank-v3-5%3A0/invoke"
    )
    assert isinstance(swc, AzureProvider) and swc.url.endswith(".models.ai.azure.com/v2/rerank")
    assert isinstance(fdry, AzureProvider)
    assert fdry.url == "https://my-resource.services.ai.azure.com/providers/cohere/v2/rerank"
    assert isinstance(oci, OciProvider)
    assert (
        oci.url
        == "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/rerankText"
    )


@pytest.mark.parametrize(
    "faults",
    [AwsFaults(status=429), AwsFaults(status=503), AwsFaults(hang=True)],
    ids=["throttled", "down", "slow"],
)
def test_bedrock_trouble_fails_over_to_azure(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    faults: AwsFaults,
) -> None:
    isolate_aws(
        monkeypatch,
        tmp_path,
        f"[default]\naws_access_key_id={ACCESS_KEY}\naws_secret_access_key={SECRET_KEY}\n",
    )
    bedrock, azure = FakeBedrock(faults=faults), FakeAzure()
    data = teams_config(
        {
            "bedrock-use1": {
                "type": "bedrock",
                "region": "us-east-1",
                "endpoint_url": servers.serve(bedrock.app()),
                "timeout_s": 0.3,
            },
            "azure-swc": {
                "type": "azure",
                "base_url": servers.serve(azure.app()),
                "api_key": AZURE_KEY,
            },
        },
        {
            "rerank-v3.5": {
                "deployments": [
                    {"provider": "bedrock-use1", "model": "cohere.rerank-v3-5:0", "priority": 0},
                    {"provider": "azure-swc", "model": "Cohere-rerank-v3.5", "priority": 1},
                ]
            }
        },
    )
    raw = client(start_gateway(data)).with_raw_response.rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS
    )
    assert raw.headers["x-rerank-deployment"] == "azure-swc/Cohere-rerank-v3.5"
    assert [r.index for r in raw.data.results] == expected_order()
    assert (len(bedrock.calls), len(azure.calls)) == (1, 1)


def test_refused_credentials_fail_over_to_a_healthy_deployment(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A deployment refusing the gateway's credentials is misconfigured: operators are told
    (a warning), the caller is served by the next deployment, and the broken one is not
    called again within the request."""
    isolate_aws(
        monkeypatch,
        tmp_path,
        f"[default]\naws_access_key_id={ACCESS_KEY}\naws_secret_access_key=wrong\n",
    )
    bedrock, azure = FakeBedrock(), FakeAzure(faults=Faults())
    data = teams_config(
        {
            "bedrock-use1": {
                "type": "bedrock",
                "region": "us-east-1",
                "endpoint_url": servers.serve(bedrock.app()),
            },
            "azure-swc": {
                "type": "azure",
                "base_url": servers.serve(azure.app()),
                "api_key": AZURE_KEY,
            },
        },
        {
            "rerank-v3.5": {
                "deployments": [
                    {"provider": "bedrock-use1", "model": "cohere.rerank-v3-5:0", "priority": 0},
                    {"provider": "azure-swc", "model": "Cohere-rerank-v3.5", "priority": 1},
                ]
            }
        },
    )
    with structlog.testing.capture_logs() as logs:
        raw = client(start_gateway(data)).with_raw_response.rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    assert raw.headers["x-rerank-deployment"] == "azure-swc/Cohere-rerank-v3.5"
    assert len(azure.calls) == 1
    # The fake answers a bad signature before recording a call: the log shows the attempt.
    warned = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert [(e["deployment"], e["status"]) for e in warned] == [
        ("bedrock-use1/cohere.rerank-v3-5:0", 403)
    ]
    assert "wrong" not in repr(logs)


def test_refused_credentials_everywhere_is_502_naming_the_deployment(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    isolate_aws(
        monkeypatch,
        tmp_path,
        f"[default]\naws_access_key_id={ACCESS_KEY}\naws_secret_access_key=wrong\n",
    )
    bedrock = FakeBedrock()
    data = teams_config(
        {
            "bedrock-use1": {
                "type": "bedrock",
                "region": "us-east-1",
                "endpoint_url": servers.serve(bedrock.app()),
            }
        },
        {
            "rerank-v3.5": {
                "deployments": [{"provider": "bedrock-use1", "model": "cohere.rerank-v3-5:0"}]
            }
        },
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        client(start_gateway(data)).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.status_code == 502
    assert "bedrock-use1" in info.value.body["message"]
    # A refused deployment is not called again within the request.
    assert [e["event"] for e in logs].count("upstream_auth_failed") == 1
