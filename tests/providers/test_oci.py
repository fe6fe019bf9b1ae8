"""The OCI provider through the gateway with the real `cohere` SDK, against the OCI fake
(HTTP Signatures verified with the SDK's own verifier), using a throwaway RSA key."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import oci
import pytest
import structlog
from cohere.core.api_error import ApiError as SdkApiError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import ConfigError, parse_config
from providers.oci import OciOptions
from tests.fakes.oci import COMPARTMENT, PATH, FakeOci, OciFaults
from tests.support.clouds import DOCS, QUERY, client, expected_order, expected_scores, one_model
from tests.support.servers import ServerLoop

TENANCY = "ocid1.tenancy.oc1..aaaafaketenancy"
USER = "ocid1.user.oc1..aaaafakeuser"
ENDPOINT_OCID = "ocid1.generativeaiendpoint.oc1.us-chicago-1.amaaafakeendpoint"
MODEL = "cohere.rerank-v4.0-pro"


@dataclass(frozen=True)
class Key:
    private_pem: str
    public_pem: bytes
    fingerprint: str

    @property
    def key_id(self) -> str:
        return f"{TENANCY}/{USER}/{self.fingerprint}"

    def encrypted_pem(self, pass_phrase: str) -> bytes:
        key = serialization.load_pem_private_key(self.private_pem.encode(), None)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(pass_phrase.encode()),
        )


def make_key() -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der).hexdigest()  # OCI's API key fingerprint format
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, 32, 2))
    return Key(
        private,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        fingerprint,
    )


@pytest.fixture(scope="session")
def key() -> Key:
    return make_key()


@pytest.fixture(scope="session")
def other_key() -> Key:
    return make_key()


@pytest.fixture
def fake_oci(servers: ServerLoop, key: Key) -> tuple[FakeOci, str]:
    fake = FakeOci(keys={key.key_id: key.public_pem})
    return fake, servers.serve(fake.app())


def api_key_settings(url: str, key: Key, **extra: object) -> dict:
    return {
        "type": "oci",
        "region": "us-chicago-1",
        "endpoint_url": url,
        "compartment_id": COMPARTMENT,
        "auth": "api_key",
        "tenancy": TENANCY,
        "user": USER,
        "fingerprint": key.fingerprint,
        "private_key": key.private_pem,
        "timeout_s": 5,
        **extra,
    }


def config(settings: dict, model: str = MODEL) -> dict:
    return one_model("oci-ord", settings, "rerank-v4.0-pro", model)


def rerank(gateway: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return client(gateway).rerank(model="rerank-v4.0-pro", query=QUERY, documents=DOCS, **kwargs)


def test_api_key_auth_through_the_gateway(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str]
) -> None:
    fake, url = fake_oci
    raw = client(start_gateway(config(api_key_settings(url, key)))).with_raw_response.rerank(
        model="rerank-v4.0-pro", query=QUERY, documents=DOCS, top_n=2
    )
    assert [r.index for r in raw.data.results] == expected_order()[:2]
    assert [r.relevance_score for r in raw.data.results] == expected_scores()[:2]
    assert raw.headers["x-rerank-deployment"] == "oci-ord/cohere.rerank-v4.0-pro"
    assert raw.data.meta.billed_units.search_units == 1  # estimated: OCI reports no usage
    # topN omitted (every score is needed), no isEcho, the on-demand model.
    assert fake.calls == [
        {
            "input": QUERY,
            "documents": DOCS,
            "compartmentId": COMPARTMENT,
            "servingMode": {"servingType": "ON_DEMAND", "modelId": MODEL},
        }
    ]
    assert fake.key_ids == [key.key_id]


def test_config_file_auth_with_a_profile(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = fake_oci
    key_file = tmp_path / "oci_api_key.pem"
    key_file.write_bytes(key.encrypted_pem("s3cret"))
    config_file = tmp_path / "oci-config"
    config_file.write_text(
        "[DEFAULT]\nuser=ocid1.user.oc1..someoneelse\nfingerprint=00:11\ntenancy=ocid1.tenancy.oc1..x\n"
        f"region=us-ashburn-1\nkey_file={key_file}\npass_phrase=wrong\n\n"
        f"[GATEWAY]\nuser={USER}\nfingerprint={key.fingerprint}\ntenancy={TENANCY}\n"
        f"region=us-chicago-1\nkey_file={key_file}\npass_phrase=s3cret\n"
    )
    settings = {
        "type": "oci",
        "region": "us-chicago-1",
        "endpoint_url": url,
        "compartment_id": COMPARTMENT,
        "auth": "config_file",
        "config_file": str(config_file),
        "profile": "GATEWAY",
    }
    res = rerank(start_gateway(config(settings)))
    assert [r.index for r in res.results] == expected_order()
    assert fake.key_ids == [key.key_id]


def test_private_key_file_with_pass_phrase(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = fake_oci
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.encrypted_pem("phrase"))
    settings = api_key_settings(url, key, private_key_file=str(key_file), pass_phrase="phrase")
    del settings["private_key"]
    rerank(start_gateway(config(settings)))
    assert fake.key_ids == [key.key_id]


def test_resource_principal_auth(
    fake_oci: tuple[FakeOci, str],
    key: Key,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RPv2.2 (OCI Functions, Data Science): a session token and key from the environment."""
    fake, url = fake_oci
    now = int(time.time())
    claims = {"iat": now, "exp": now + 3600, "res_tenant": TENANCY, "res_compartment": COMPARTMENT}
    token = jwt.encode(claims, "an-issuer-key-that-we-never-need-to-know", algorithm="HS256")
    fake.keys[f"ST${token}"] = key.public_pem
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_RPST", token)
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", key.private_pem)
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_REGION", "us-chicago-1")
    settings = {
        "type": "oci",
        "endpoint_url": url,
        "compartment_id": COMPARTMENT,
        "auth": "resource_principal",
    }
    res = rerank(start_gateway(config(settings)))
    assert [r.index for r in res.results] == expected_order()
    assert fake.key_ids == [f"ST${token}"]


@pytest.mark.parametrize(
    ("model", "extra", "mode"),
    [
        (ENDPOINT_OCID, {}, {"servingType": "DEDICATED", "endpointId": ENDPOINT_OCID}),
        (
            MODEL,
            {"serving_mode": "dedicated", "endpoint_id": ENDPOINT_OCID},
            {"servingType": "DEDICATED", "endpointId": ENDPOINT_OCID},
        ),
    ],
)
def test_dedicated_serving_mode(
    fake_oci: tuple[FakeOci, str],
    key: Key,
    start_gateway: Callable[..., str],
    model: str,
    extra: dict,
    mode: dict,
) -> None:
    fake, url = fake_oci
    raw = client(
        start_gateway(config(api_key_settings(url, key, **extra), model))
    ).with_raw_response.rerank(model="rerank-v4.0-pro", query=QUERY, documents=DOCS)
    assert [r.index for r in raw.data.results] == expected_order()
    assert raw.headers["x-rerank-deployment"] == f"oci-ord/{model}"
    assert fake.calls[0]["servingMode"] == mode


def test_max_tokens_per_doc_is_forwarded(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str]
) -> None:
    fake, url = fake_oci
    rerank(start_gateway(config(api_key_settings(url, key))), max_tokens_per_doc=300)
    assert fake.calls[0]["maxTokensPerDocument"] == 300


@pytest.mark.parametrize(
    ("faults", "status", "needle", "retry_after"),
    [
        (OciFaults(status=429), 429, "oci-ord answered 429 TooManyRequests", "1"),
        (OciFaults(status=429, retry_after="5"), 429, "TooManyRequests", "5"),
        (OciFaults(status=500), 503, "oci-ord answered 500 InternalServerError", "1"),
        (OciFaults(status=503), 503, "oci-ord answered 503 ServiceUnavailable", "1"),
        (OciFaults(status=409), 503, "oci-ord answered 409 IncorrectState", "1"),
        (OciFaults(status=400, code="QuotaExceeded"), 503, "QuotaExceeded", "1"),
        (
            OciFaults(status=400),
            400,
            "the upstream rejected the request: oci-ord answered 400 InvalidParameter",
            None,
        ),
    ],
)
def test_oci_errors_map_to_cohere_errors(
    fake_oci: tuple[FakeOci, str],
    key: Key,
    start_gateway: Callable[..., str],
    faults: OciFaults,
    status: int,
    needle: str,
    retry_after: str | None,
) -> None:
    fake, url = fake_oci
    fake.faults = faults
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        rerank(start_gateway(config(api_key_settings(url, key))))
    assert info.value.status_code == status
    assert needle in info.value.body["message"]
    assert info.value.headers.get("retry-after") == retry_after
    # The opc-request-id is kept for Oracle support.
    failures = [e for e in logs if e["event"] == "upstream_error"]
    assert failures and failures[0]["upstream_request_id"].count("/") == 2


@pytest.mark.parametrize(
    ("break_it", "code", "status"),
    [
        ("wrong_key", "NotAuthenticated", 401),
        ("wrong_compartment", "NotAuthorizedOrNotFound", 404),
    ],
)
def test_refused_credentials_are_a_502_naming_the_deployment_and_a_warning(
    fake_oci: tuple[FakeOci, str],
    key: Key,
    other_key: Key,
    start_gateway: Callable[..., str],
    break_it: str,
    code: str,
    status: int,
) -> None:
    fake, url = fake_oci
    settings = api_key_settings(url, key)
    if break_it == "wrong_key":  # same keyId, another private key: the signature fails
        settings["private_key"] = other_key.private_pem
    else:
        settings["compartment_id"] = "ocid1.compartment.oc1..notours"
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        rerank(start_gateway(config(settings)))
    message = info.value.body["message"]
    assert info.value.status_code == 502
    assert f"oci-ord answered {status} {code}" in message
    assert "deployment 'oci-ord/cohere.rerank-v4.0-pro'" in message
    warnings = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert [(w["deployment"], w["status"], w["code"]) for w in warnings] == [
        ("oci-ord/cohere.rerank-v4.0-pro", status, code)
    ]
    assert warnings[0]["upstream_request_id"]
    assert "PRIVATE KEY" not in repr(logs) and "PRIVATE KEY" not in message
    if break_it == "wrong_key":
        assert fake.rejections == ["signature mismatch"]


def test_missing_config_file_fails_requests_not_config_parsing(
    servers: ServerLoop, start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake = FakeOci()
    settings = {
        "type": "oci",
        "region": "us-chicago-1",
        "endpoint_url": servers.serve(fake.app()),
        "compartment_id": COMPARTMENT,
        "config_file": str(tmp_path / "nope"),
    }
    with pytest.raises(SdkApiError) as info:
        rerank(start_gateway(config(settings)))
    assert info.value.status_code == 502
    assert (
        "oci-ord: loading OCI credentials failed (ConfigFileNotFound)" in info.value.body["message"]
    )
    assert fake.calls == []


def test_slow_oci_hits_the_timeout(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str]
) -> None:
    fake, url = fake_oci
    fake.faults = OciFaults(hang=True)
    with pytest.raises(SdkApiError) as info:
        rerank(start_gateway(config(api_key_settings(url, key, timeout_s=0.2))))
    assert info.value.status_code == 504
    assert "oci-ord did not answer within 0.2 s" in info.value.body["message"]


async def test_fake_rejects_a_body_altered_after_signing(
    fake_oci: tuple[FakeOci, str], key: Key
) -> None:
    """Sign with the SDK's signer as the provider does, then alter the body in transit."""
    fake, url = fake_oci
    from providers.oci import _Signable

    body = json.dumps(
        {
            "input": "q",
            "documents": ["a", "b"],
            "compartmentId": COMPARTMENT,
            "servingMode": {"servingType": "ON_DEMAND", "modelId": MODEL},
        }
    ).encode()
    request = _Signable(url + PATH, PATH, body)
    oci.signer.Signer(TENANCY, USER, key.fingerprint, None, private_key_content=key.private_pem)(
        request
    )
    tampered = body.replace(b'"a"', b'"z"')  # same length: only the digest can tell
    forged = dict(
        request.headers,
        **{"x-content-sha256": base64.b64encode(hashlib.sha256(tampered).digest()).decode()},
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(url + PATH, data=body, headers=request.headers) as resp:
            assert resp.status == 200  # control: the untouched request verifies
        async with session.post(url + PATH, data=tampered, headers=request.headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "NotAuthenticated"
            assert resp.headers["opc-request-id"]
        # Recomputing the digest does not help: x-content-sha256 is itself signed.
        async with session.post(url + PATH, data=tampered, headers=forged) as resp:
            assert resp.status == 401
    assert fake.rejections == ["x-content-sha256 does not match the body", "signature mismatch"]
    assert len(fake.calls) == 1


def test_fake_refuses_a_stale_date(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str]
) -> None:
    fake, url = fake_oci
    fake.clock = lambda: time.time() + 600
    with pytest.raises(SdkApiError) as info:
        rerank(start_gateway(config(api_key_settings(url, key))))
    assert info.value.status_code == 502
    assert fake.rejections == ["date outside the allowed clock skew"]


# -- second witness: the OCI SDK itself against the fake --------------------------------


def sdk_client(url: str, key: Key) -> oci.generative_ai_inference.GenerativeAiInferenceClient:
    config = {
        "user": USER,
        "tenancy": TENANCY,
        "fingerprint": key.fingerprint,
        "key_content": key.private_pem,
        "region": "us-chicago-1",
    }
    return oci.generative_ai_inference.GenerativeAiInferenceClient(
        config, service_endpoint=url, retry_strategy=oci.retry.NoneRetryStrategy()
    )


def rerank_details(**extra: object) -> oci.generative_ai_inference.models.RerankTextDetails:
    return oci.generative_ai_inference.models.RerankTextDetails(
        input=QUERY,
        documents=DOCS,
        compartment_id=COMPARTMENT,
        serving_mode=oci.generative_ai_inference.models.OnDemandServingMode(model_id=MODEL),
        **extra,
    )


def test_oci_sdk_rerank_text_against_the_fake(fake_oci: tuple[FakeOci, str], key: Key) -> None:
    fake, url = fake_oci
    resp = sdk_client(url, key).rerank_text(rerank_details(top_n=2, is_echo=True))
    ranks = resp.data.document_ranks
    assert [r.index for r in ranks] == expected_order()[:2]
    assert [r.relevance_score for r in ranks] == pytest.approx(expected_scores()[:2])
    assert ranks[0].document.text == DOCS[ranks[0].index]
    assert resp.request_id and resp.data.model_id == MODEL
    assert fake.key_ids == [key.key_id]


def test_oci_sdk_with_a_wrong_key_gets_not_authenticated(
    fake_oci: tuple[FakeOci, str], key: Key, other_key: Key
) -> None:
    _, url = fake_oci
    impostor = Key(other_key.private_pem, other_key.public_pem, key.fingerprint)
    with pytest.raises(oci.exceptions.ServiceError) as info:
        sdk_client(url, impostor).rerank_text(rerank_details())
    assert (info.value.status, info.value.code) == (401, "NotAuthenticated")
    assert info.value.request_id


def test_oci_sdk_parses_the_fakes_throttling(fake_oci: tuple[FakeOci, str], key: Key) -> None:
    fake, url = fake_oci
    fake.faults = OciFaults(status=429)
    with pytest.raises(oci.exceptions.ServiceError) as info:
        sdk_client(url, key).rerank_text(rerank_details())
    assert (info.value.status, info.value.code) == (429, "TooManyRequests")


# -- configuration ----------------------------------------------------------------------


def test_default_endpoint_from_region() -> None:
    options = OciOptions(compartment_id=COMPARTMENT, region="us-chicago-1")
    assert options.endpoint() == "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com"
    sovereign = OciOptions(compartment_id=COMPARTMENT, region="eu-frankfurt-2")
    assert (
        sovereign.endpoint() == "https://inference.generativeai.eu-frankfurt-2.oci.oraclecloud.eu"
    )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"auth": "api_key", "tenancy": TENANCY, "private_key": "x"},
            "auth: api_key needs user, fingerprint",
        ),
        (
            {"auth": "api_key", "tenancy": TENANCY, "user": USER, "fingerprint": "f"},
            "exactly one of private_key (PEM) or private_key_file",
        ),
        ({"serving_mode": "dedicated"}, "serving_mode: dedicated needs endpoint_id"),
        ({"region": None}, "needs a region (e.g. us-chicago-1) or an endpoint_url"),
        ({"compartment_id": "my-compartment"}, "compartment_id must be an OCID"),
        (
            {"auth": "user_principal"},
            "auth: must be one of config_file, api_key, instance_principal, resource_principal",
        ),
    ],
)
def test_oci_config_is_validated(settings: dict, problem: str) -> None:
    entry = {"type": "oci", "region": "us-chicago-1", "compartment_id": COMPARTMENT, **settings}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_config(config(entry), {})
    assert problem in str(info.value)


def test_config_file_session_token_profile(
    fake_oci: tuple[FakeOci, str], key: Key, start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    """A profile made by `oci session authenticate`: a security token file and its key."""
    fake, url = fake_oci
    (tmp_path / "token").write_text("session-token-from-oci-cli\n")
    (tmp_path / "key.pem").write_text(key.private_pem)
    config_file = tmp_path / "config"
    config_file.write_text(
        f"[SESSION]\nfingerprint={key.fingerprint}\ntenancy={TENANCY}\nregion=us-chicago-1\n"
        f"key_file={tmp_path / 'key.pem'}\nsecurity_token_file={tmp_path / 'token'}\n"
    )
    fake.keys["ST$session-token-from-oci-cli"] = key.public_pem
    settings = {
        "type": "oci",
        "region": "us-chicago-1",
        "endpoint_url": url,
        "compartment_id": COMPARTMENT,
        "config_file": str(config_file),
        "profile": "SESSION",
    }
    rerank(start_gateway(config(settings)))
    assert fake.key_ids == ["ST$session-token-from-oci-cli"]
