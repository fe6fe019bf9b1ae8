"""Helpers for the cloud provider tests: gateway configs, the SDK client, AWS isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cohere
import pytest

from tests.conftest import TEAM_KEY, teams_config
from tests.fakes.cohere import fake_score

QUERY = "What is the capital of the United States?"
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]


def one_model(
    provider: str, settings: dict[str, Any], model: str, upstream_model: str
) -> dict[str, Any]:
    return teams_config(
        {provider: settings},
        {model: {"deployments": [{"provider": provider, "model": upstream_model}]}},
    )


def client(url: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=TEAM_KEY, base_url=url, max_retries=0, timeout=10)


def expected_order(query: str = QUERY, docs: list[str] = DOCS) -> list[int]:
    scores = [fake_score(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i))


def expected_scores(query: str = QUERY, docs: list[str] = DOCS) -> list[float]:
    return [fake_score(query, docs[i]) for i in expected_order(query, docs)]


AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_BEARER_TOKEN_BEDROCK",
)


def isolate_aws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, credentials: str = "", config: str = ""
) -> None:
    """Point botocore's standard chain at files in tmp_path only (and never at IMDS)."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    creds_file, config_file = tmp_path / "aws-credentials", tmp_path / "aws-config"
    creds_file.write_text(credentials)
    config_file.write_text(config)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds_file))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def message_of(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    return body.get("message", "") if isinstance(body, dict) else str(body)
