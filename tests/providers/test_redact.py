"""What of an upstream's error text reaches a caller: never a credential, never unbounded.

Each fake here echoes the request it got (headers and the start of the body) into its
error message, in its own service's envelope, as a debugging proxy or a careless server
would. The caller must see the echo (it is the upstream's explanation) with every
credential taken out: the provider's key (Bearer or `api-key`), SigV4's signature,
access key id and session token, OCI's signature and key id, and the caller's own team
key, which the caller put in its query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from gateway.errors import MAX_UPSTREAM_MESSAGE, Scrubber
from gateway.http.auth import hash_key
from providers.redact import REDACTED, redact, secret_values
from tests.conftest import TEAM_KEY
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import AwsFaults, FakeBedrock
from tests.fakes.cohere import FakeCohere, Faults
from tests.fakes.oci import FakeOci, OciFaults
from tests.fakes.tei import FakeTei
from tests.providers.test_oci import api_key_settings, make_key
from tests.support.clouds import isolate_aws, one_model
from tests.support.servers import ServerLoop

# A key without a recognisable form: only the exact value sent can find it.
COHERE_KEY = "Zq3vR8kLm2Tn5Wp7Xy9Bc4Df6Gh1Jk0LmNoPqRs"
AZURE_KEY = "0f8e7d6c5b4a39281706f5e4d3c2b1a0"
TEI_KEY = "tei-bearer-token-0123456789"
AWS_KEY_ID, AWS_SECRET = "AKIDTEMPORARY0000009", "temporary-secret-for-echo-tests"
AWS_TOKEN = "FwoGZXIvYXdzEFAKEechoedSessionTokenValue0123456789"
QUERY = f"{TEAM_KEY} what is the capital of France"  # the caller's own key, by mistake


def cohere(servers: ServerLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeCohere(api_key=COHERE_KEY)
    settings = {"type": "cohere", "base_url": servers.serve(fake.app()), "api_key": COHERE_KEY}
    return fake, Faults, one_model("up", settings, "rerank-v3.5", "rerank-v3.5")


def azure(servers: ServerLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeAzure(api_key=AZURE_KEY)
    settings = {
        "type": "azure",
        "base_url": servers.serve(fake.app()),
        "api_key": AZURE_KEY,
        "auth_header": "api-key",
    }
    return fake, Faults, one_model("up", settings, "rerank-v3.5", "Cohere-rerank-v3.5")


def bedrock(servers: ServerLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    credentials = (
        f"[default]\naws_access_key_id = {AWS_KEY_ID}\n"
        f"aws_secret_access_key = {AWS_SECRET}\naws_session_token = {AWS_TOKEN}\n"
    )
    isolate_aws(monkeypatch, tmp_path, credentials)
    fake = FakeBedrock(secrets={AWS_KEY_ID: AWS_SECRET}, tokens={AWS_KEY_ID: AWS_TOKEN})
    settings = {"type": "bedrock", "region": "us-east-1", "endpoint_url": servers.serve(fake.app())}
    return fake, AwsFaults, one_model("up", settings, "rerank-v3.5", "cohere.rerank-v3-5:0")


def oci(servers: ServerLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    key = make_key()
    fake = FakeOci(keys={key.key_id: key.public_pem})
    settings = api_key_settings(servers.serve(fake.app()), key)
    return fake, OciFaults, one_model("up", settings, "rerank-v3.5", "cohere.rerank-v4.0-pro")


def tei(servers: ServerLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeTei(api_key=TEI_KEY)
    settings = {"type": "tei", "base_url": servers.serve(fake.app()), "api_key": TEI_KEY}
    return fake, Faults, one_model("up", settings, "rerank-v3.5", "BAAI/bge-reranker-v2-m3")


def credentials_in(headers: dict[str, str]) -> list[str]:
    """Every credential an echo of these request headers could quote: whole header values
    and their parts (the signature, the access key id, the token, the OCI key id)."""
    found = []
    for name, value in headers.items():
        if name.lower() in ("authorization", "api-key", "x-amz-security-token"):
            found.append(value)
            found += [p for p in re.split(r"[\s,;=\"/]+", value) if len(p) >= 16]
    return found


@pytest.mark.parametrize("provider", [cohere, azure, bedrock, oci, tei])
@pytest.mark.parametrize("status", [400, 503])
def test_an_upstream_that_echoes_its_request_shows_the_caller_no_credential(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    provider: Callable[..., Any],
    status: int,
) -> None:
    fake, faults, config = provider(servers, tmp_path, monkeypatch)
    fake.faults = faults(echo=True, status=status)
    echoed = fake.faults.echoed
    url = start_gateway(config)
    with structlog.testing.capture_logs() as logs:
        answer = httpx.post(
            url + "/v2/rerank",
            json={"model": "rerank-v3.5", "query": QUERY, "documents": ["Paris", "Lyon"]},
            headers={"Authorization": f"Bearer {TEAM_KEY}"},
            timeout=15,
        )
    message = answer.json()["message"]
    assert answer.status_code == (400 if status == 400 else 503), message
    assert "cannot handle" in message and REDACTED in message  # the echo, scrubbed
    assert len(message) <= MAX_UPSTREAM_MESSAGE + 100  # the gateway's own words around it
    secrets = [TEAM_KEY] + [s for headers in echoed for s in credentials_in(headers)]
    assert echoed and len(secrets) > 1
    for secret in secrets:
        assert secret not in message
        assert secret not in repr(logs)


def test_the_fakes_echo_does_carry_the_credentials(servers: ServerLoop) -> None:
    # The test above proves something only if the upstream's text held the secrets.
    fake = FakeCohere(api_key=COHERE_KEY)
    fake.faults = Faults(echo=True)
    answer = httpx.post(
        servers.serve(fake.app()) + "/v2/rerank",
        json={"model": "m", "query": QUERY, "documents": ["a"]},
        headers={"Authorization": f"Bearer {COHERE_KEY}"},
    )
    assert COHERE_KEY in answer.json()["message"] and TEAM_KEY in answer.json()["message"]


@pytest.mark.parametrize(
    "text",
    [
        'headers: {"Authorization": "Bearer abc.def-ghi", "Host": "x"}',
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/20260101/us-east-1",
        "{'api-key': 'f00dfeedf00dfeed', 'accept': 'json'}",
        "x-amz-security-token: IQoJb3JpZ2luX2VjEFAKE",
        'Signature version="1",keyId="ocid1.tenancy.oc1..aaa/ocid1.user.oc1..bbb/aa:bb",'
        'signature="c2lnbmF0dXJl"',
        "see https://up.example/rerank?api_key=f00dfeedf00dfeed&model=m",
        "token rgk_0a1b2c3d4e5f_Qm9vbGVhbnNhcmVudGhlYmVzdA was refused",
        "rejected rg_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "bad key sk-proj-0123456789abcdefghij",
        "sig 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 mismatch",
    ],
)
def test_credential_looking_text_is_redacted_whoever_sent_it(text: str) -> None:
    scrubbed = redact(text)
    assert REDACTED in scrubbed
    for secret in (
        "abc.def-ghi",
        "AKIAABCDEFGHIJKLMNOP",
        "f00dfeedf00dfeed",
        "IQoJb3JpZ2luX2VjEFAKE",
        "c2lnbmF0dXJl",
        "ocid1.user",
        "Qm9vbGVhbnNhcmVudGhlYmVzdA",
        "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "0123456789abcdefghij",
        "9f86d081884c7d659a2feaa0c55ad015",
    ):
        assert secret not in scrubbed


def test_ordinary_error_text_is_left_alone() -> None:
    for text in (
        "invalid request: max_tokens_per_doc must be at least 1",
        "too many tokens in document 3 (input_tokens: 9000)",
        "The request signature we calculated does not match the signature you provided.",
        "model 'rerank-v3.5' not found",
    ):
        assert redact(text) == text


def test_exact_values_go_first_and_the_cut_comes_after() -> None:
    secret = "plain-looking-secret-value"
    text = "x" * 280 + " " + secret
    scrubbed = redact(text, [secret], limit=300)
    assert len(scrubbed) <= 300 and "plain-looking" not in scrubbed  # no prefix kept
    sent = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    assert secret in secret_values(sent) and "application/json" not in secret_values(sent)


def test_the_gateway_knows_its_keys_by_digest_only() -> None:
    scrub = Scrubber({hash_key("my-config-team-key")})
    assert scrub("echo: my-config-team-key. done") == f"echo: {REDACTED}. done"
    assert scrub("x" * 2000).endswith("…") and len(scrub("x" * 2000)) == MAX_UPSTREAM_MESSAGE
