"""The Bedrock provider through the gateway, driven by the real `cohere` SDK, against the
strict Bedrock fake (SigV4 verified over the raw path and body), with credentials from
botocore's standard chain pointed at files in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import boto3
import botocore.config
import pytest
import structlog
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from cohere.core.api_error import ApiError as SdkApiError

from gateway.config import ConfigError, parse_config
from tests.fakes.bedrock import ACCESS_KEY, API_KEY, SECRET_KEY, AwsFaults, FakeBedrock
from tests.support.clouds import (
    DOCS,
    QUERY,
    client,
    expected_order,
    expected_scores,
    isolate_aws,
    one_model,
)
from tests.support.servers import ServerLoop

MODEL_ID = "cohere.rerank-v3-5:0"
ARN = "arn:aws:bedrock:us-east-1::foundation-model/cohere.rerank-v3-5:0"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE-session-token-value"
CREDENTIALS = f"""
[default]
aws_access_key_id = {ACCESS_KEY}
aws_secret_access_key = {SECRET_KEY}

[gateway]
aws_access_key_id = AKIDTEMPORARY0000001
aws_secret_access_key = temporary-secret
aws_session_token = {SESSION_TOKEN}

[wrong-secret]
aws_access_key_id = {ACCESS_KEY}
aws_secret_access_key = not-the-secret

[unknown-key]
aws_access_key_id = AKIDUNKNOWN000000001
aws_secret_access_key = whatever
"""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    isolate_aws(monkeypatch, tmp_path, CREDENTIALS)
    return tmp_path


@pytest.fixture
def bedrock(servers: ServerLoop, aws: Path) -> tuple[FakeBedrock, str]:
    fake = FakeBedrock(
        secrets={ACCESS_KEY: SECRET_KEY, "AKIDTEMPORARY0000001": "temporary-secret"},
        tokens={"AKIDTEMPORARY0000001": SESSION_TOKEN},
    )
    return fake, servers.serve(fake.app())


def config(url: str, model: str = MODEL_ID, **settings: object) -> dict:
    provider = {
        "type": "bedrock",
        "region": "us-east-1",
        "endpoint_url": url,
        "timeout_s": 5,
        **settings,
    }
    return one_model("bedrock-use1", provider, "rerank-v3.5", model)


def test_invoke_model_through_the_gateway(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    raw = client(start_gateway(config(url))).with_raw_response.rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2
    )
    res = raw.data
    assert [r.index for r in res.results] == expected_order()[:2]
    assert [r.relevance_score for r in res.results] == expected_scores()[:2]
    assert raw.headers["x-rerank-deployment"] == "bedrock-use1/cohere.rerank-v3-5:0"
    # Bedrock reports no usage: the gateway bills its estimate.
    assert res.meta.billed_units.search_units == 1
    # Exactly the keys Bedrock accepts (no model, no top_n), at boto3's encoded path.
    assert fake.calls == [{"query": QUERY, "documents": DOCS, "api_version": 2}]
    assert fake.raw_paths == ["/model/cohere.rerank-v3-5%3A0/invoke"]
    assert fake.models == [MODEL_ID]
    assert fake.access_keys == [ACCESS_KEY]  # the [default] profile of the standard chain


def test_profile_with_session_token(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    res = client(start_gateway(config(url, profile="gateway"))).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS
    )
    assert [r.index for r in res.results] == expected_order()
    assert fake.access_keys == ["AKIDTEMPORARY0000001"]  # token checked by the fake too


def test_environment_credentials(
    bedrock: tuple[FakeBedrock, str],
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = bedrock
    fake.secrets["AKIDFROMENVIRONMENT1"] = "env-secret"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    client(start_gateway(config(url))).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert fake.access_keys == ["AKIDFROMENVIRONMENT1"]  # environment wins over the files


def test_arn_model_id_path_is_encoded_as_boto3_encodes_it(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    client(start_gateway(config(url, model=ARN))).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS
    )
    runtime = boto3_client("bedrock-runtime", url)
    runtime.invoke_model(
        modelId=ARN, body=json.dumps({"query": QUERY, "documents": DOCS, "api_version": 2})
    )
    assert fake.models == [ARN, ARN]
    ours, boto3s = fake.raw_paths
    assert (
        ours
        == boto3s
        == "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fcohere.rerank-v3-5%3A0/invoke"
    )


def test_max_tokens_per_doc_is_not_forwarded_by_default(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    client(start_gateway(config(url))).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=256
    )
    assert fake.calls == [{"query": QUERY, "documents": DOCS, "api_version": 2}]


def test_max_tokens_per_doc_forwarded_when_configured(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    gateway = start_gateway(config(url, forward_max_tokens_per_doc=True))
    # A Bedrock that refuses the key: its exact validation error reaches the caller as 400.
    with pytest.raises(SdkApiError) as info:
        client(gateway).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=256
        )
    assert info.value.status_code == 400
    assert (
        "Malformed input request: #: extraneous key [max_tokens_per_doc] is not permitted, "
        "please reformat your input and try again." in info.value.body["message"]
    )
    # A Bedrock that takes it.
    fake.accept_max_tokens_per_doc = True
    client(gateway).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=256)
    assert fake.calls[-1] == {
        "query": QUERY,
        "documents": DOCS,
        "api_version": 2,
        "max_tokens_per_doc": 256,
    }


def test_rerank_api(bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]) -> None:
    fake, url = bedrock
    raw = client(start_gateway(config(url, api="rerank"))).with_raw_response.rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=1
    )
    assert [r.index for r in raw.data.results] == expected_order()[:1]
    assert [r.relevance_score for r in raw.data.results] == expected_scores()[:1]
    assert raw.headers["x-rerank-deployment"] == "bedrock-use1/cohere.rerank-v3-5:0"
    assert fake.raw_paths == ["/rerank"]
    assert fake.calls == [
        {
            "queries": [{"type": "TEXT", "textQuery": {"text": QUERY}}],
            "sources": [
                {
                    "type": "INLINE",
                    "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}},
                }
                for d in DOCS
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "numberOfResults": len(DOCS),
                    "modelConfiguration": {"modelArn": ARN},
                },
            },
        }
    ]


def test_bedrock_api_key_as_bearer(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    res = client(start_gateway(config(url, api_key=API_KEY))).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS
    )
    assert [r.index for r in res.results] == expected_order()
    assert fake.access_keys == []  # no SigV4 at all
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("faults", "status", "needle", "retry_after"),
    [
        (AwsFaults(status=429), 429, "429 ThrottlingException: Too many requests", "1"),
        (AwsFaults(status=429, retry_after="7"), 429, "ThrottlingException", "7"),
        (AwsFaults(status=429, code="ModelNotReadyException"), 429, "ModelNotReadyException", "1"),
        (AwsFaults(status=500), 503, "500 InternalServerException", "1"),
        (AwsFaults(status=503), 503, "503 ServiceUnavailableException", "1"),
        (AwsFaults(status=408), 503, "408 ModelTimeoutException", "1"),
        (AwsFaults(status=424), 503, "424 ModelErrorException", "1"),
        (
            AwsFaults(status=400, code="ServiceQuotaExceededException"),
            503,
            "ServiceQuotaExceededException",
            "1",
        ),
        (AwsFaults(status=400), 400, "400 ValidationException: Malformed input request", None),
    ],
)
def test_bedrock_errors_map_to_cohere_errors(
    bedrock: tuple[FakeBedrock, str],
    start_gateway: Callable[..., str],
    faults: AwsFaults,
    status: int,
    needle: str,
    retry_after: str | None,
) -> None:
    fake, url = bedrock
    fake.faults = faults
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url))).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.status_code == status
    assert needle in info.value.body["message"]
    assert info.value.headers.get("retry-after") == retry_after


@pytest.mark.parametrize(
    ("profile", "code", "secret_like"),
    [
        ("wrong-secret", "InvalidSignatureException", "not-the-secret"),
        ("unknown-key", "UnrecognizedClientException", "whatever"),
        (None, "AccessDeniedException", SECRET_KEY),  # injected 403, e.g. no model access
    ],
)
def test_refused_credentials_are_a_502_naming_the_deployment_and_a_warning(
    bedrock: tuple[FakeBedrock, str],
    start_gateway: Callable[..., str],
    profile: str | None,
    code: str,
    secret_like: str,
) -> None:
    fake, url = bedrock
    settings = {"profile": profile} if profile else {}
    if profile is None:
        fake.faults = AwsFaults(status=403)
    gateway = start_gateway(config(url, **settings))
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        client(gateway).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    message = info.value.body["message"]
    assert info.value.status_code == 502
    assert f"bedrock-use1 answered 403 {code}" in message
    assert "deployment 'bedrock-use1/cohere.rerank-v3-5:0'" in message
    assert "gateway configuration problem" in message
    warnings = [e for e in logs if e["event"] == "upstream_auth_failed"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["deployment"] == "bedrock-use1/cohere.rerank-v3-5:0"
    assert (warnings[0]["status"], warnings[0]["code"]) == (403, code)
    assert warnings[0]["upstream_request_id"]  # x-amzn-RequestId, for AWS support
    assert secret_like not in repr(logs) and secret_like not in message


def test_signature_error_text_with_the_canonical_request_never_reaches_the_caller(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    fake.secrets["AKIDTEMPORARY0000001"] = "rotated-away"  # the profile's secret is now wrong
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url, profile="gateway"))).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    message = info.value.body["message"]
    assert (
        "InvalidSignatureException: The request signature we calculated does not match" in message
    )
    assert "Canonical String" not in message and SESSION_TOKEN not in message


def test_expired_signature_is_refused(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    fake.now = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)  # our clock lags
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url))).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.status_code == 502
    assert "InvalidSignatureException: Signature expired" in info.value.body["message"]


def test_no_credentials_at_all_is_an_auth_problem(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    isolate_aws(monkeypatch, tmp_path, credentials="")
    fake = FakeBedrock()
    with structlog.testing.capture_logs() as logs, pytest.raises(SdkApiError) as info:
        client(start_gateway(config(servers.serve(fake.app())))).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    assert info.value.status_code == 502
    assert "bedrock-use1: no AWS credentials found" in info.value.body["message"]
    assert fake.calls == []
    assert [e["deployment"] for e in logs if e["event"] == "upstream_auth_failed"] == [
        "bedrock-use1/cohere.rerank-v3-5:0"
    ]


CREDENTIAL_PROCESS = """
import datetime, json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
print(json.dumps({"Version": 1, "AccessKeyId": f"AKIDROTATING00000{n:03d}", "SecretAccessKey": f"secret-{n}",
                  "SessionToken": f"token-{n}", "Expiration": expires.isoformat()}))
"""


def test_expiring_credentials_are_refreshed(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # credential_process hands out credentials that expire in 5 minutes, inside botocore's
    # refresh window: every request must fetch fresh ones (off the event loop).
    script = tmp_path / "issue_credentials.py"
    script.write_text(CREDENTIAL_PROCESS)
    process = f"{sys.executable} {script} {tmp_path / 'counter'}"
    isolate_aws(
        monkeypatch, tmp_path, config=f"[profile rotating]\ncredential_process = {process}\n"
    )
    fake = FakeBedrock(
        secrets={f"AKIDROTATING00000{n:03d}": f"secret-{n}" for n in range(1, 6)},
        tokens={f"AKIDROTATING00000{n:03d}": f"token-{n}" for n in range(1, 6)},
    )
    gateway = start_gateway(config(servers.serve(fake.app()), profile="rotating"))
    for i in range(2):  # different queries, so the score cache cannot answer the second
        client(gateway).rerank(model="rerank-v3.5", query=f"{QUERY} {i}", documents=DOCS)
    # 001 was resolved at start; each request then refreshed.
    assert fake.access_keys == ["AKIDROTATING00000002", "AKIDROTATING00000003"]


def test_slow_bedrock_hits_the_timeout(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    fake.faults = AwsFaults(hang=True)
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url, timeout_s=0.2))).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    assert info.value.status_code == 504
    assert "bedrock-use1 did not answer within 0.2 s" in info.value.body["message"]


def signed(url: str, body: bytes, secret: str = SECRET_KEY) -> dict[str, str]:
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, secret), "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("path", ["/model/cohere.rerank-v3-5%3A0/invoke", "/rerank"])
async def test_fake_rejects_a_body_altered_after_signing(
    bedrock: tuple[FakeBedrock, str], path: str
) -> None:
    fake, base = bedrock

    url = base + path
    if path == "/rerank":
        body = json.dumps(
            {
                "queries": [{"type": "TEXT", "textQuery": {"text": "q"}}],
                "sources": [
                    {
                        "type": "INLINE",
                        "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": "d"}},
                    }
                ],
                "rerankingConfiguration": {
                    "type": "BEDROCK_RERANKING_MODEL",
                    "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": ARN}},
                },
            }
        ).encode()
    else:
        body = json.dumps({"query": "q", "documents": ["d"], "api_version": 2}).encode()
    headers = signed(url, body)
    async with aiohttp.ClientSession() as session:
        async with session.post(yarl.URL(url, encoded=True), data=body, headers=headers) as resp:
            assert resp.status == 200  # control: the untouched request verifies
        tampered = body.replace(b'"d"', b'"e"')
        async with session.post(
            yarl.URL(url, encoded=True), data=tampered, headers=headers
        ) as resp:
            assert resp.status == 403
            assert resp.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
            assert "x-amzn-RequestId" in resp.headers
            assert (await resp.json())["message"].startswith("The request signature we calculated")
    assert len(fake.calls) == 1


# -- second witnesses: boto3 itself against the fake ------------------------------------


def boto3_client(service: str, url: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY):  # type: ignore[no-untyped-def]
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def test_boto3_invoke_model_against_the_fake(bedrock: tuple[FakeBedrock, str]) -> None:
    fake, url = bedrock
    runtime = boto3_client("bedrock-runtime", url)
    resp = runtime.invoke_model(
        modelId=MODEL_ID,
        body=json.dumps({"query": QUERY, "documents": DOCS, "top_n": 2, "api_version": 2}),
        contentType="application/json",
        accept="application/json",
    )
    results = json.loads(resp["body"].read())["results"]
    assert [r["index"] for r in results] == expected_order()[:2]
    assert fake.raw_paths == ["/model/cohere.rerank-v3-5%3A0/invoke"]
    # The strict schema answers boto3 as Bedrock does.
    with pytest.raises(ClientError) as info:
        runtime.invoke_model(
            modelId=MODEL_ID, body=json.dumps({"query": QUERY, "documents": DOCS, "stream": False})
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["Error"]["Message"] == (
        "Malformed input request: #: required key [api_version] not found#: extraneous key [stream] "
        "is not permitted, please reformat your input and try again."
    )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [
        (ACCESS_KEY, "wrong", "InvalidSignatureException"),
        ("AKIDNOBODY0000000001", "x", "UnrecognizedClientException"),
    ],
)
def test_boto3_with_wrong_credentials_gets_the_fakes_auth_errors(
    bedrock: tuple[FakeBedrock, str], key: str, secret: str, code: str
) -> None:
    _, url = bedrock
    for service in ("bedrock-runtime", "bedrock-agent-runtime"):
        sdk = boto3_client(service, url, key, secret)
        with pytest.raises(ClientError) as info:
            if service == "bedrock-runtime":
                sdk.invoke_model(
                    modelId=MODEL_ID,
                    body=json.dumps({"query": "q", "documents": ["d"], "api_version": 2}),
                )
            else:
                sdk.rerank(**rerank_request(["d"]))
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert info.value.response["ResponseMetadata"]["RequestId"]


def rerank_request(docs: list[str]) -> dict:
    return {
        "queries": [{"type": "TEXT", "textQuery": {"text": QUERY}}],
        "sources": [
            {
                "type": "INLINE",
                "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}},
            }
            for d in docs
        ],
        "rerankingConfiguration": {
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "numberOfResults": 2,
                "modelConfiguration": {"modelArn": ARN},
            },
        },
    }


def test_boto3_agent_runtime_rerank_against_the_fake(bedrock: tuple[FakeBedrock, str]) -> None:
    fake, url = bedrock
    resp = boto3_client("bedrock-agent-runtime", url).rerank(**rerank_request(DOCS))
    assert [r["index"] for r in resp["results"]] == expected_order()[:2]
    assert [r["relevanceScore"] for r in resp["results"]] == pytest.approx(expected_scores()[:2])
    assert fake.raw_paths == ["/rerank"]


def test_boto3_parses_the_fakes_throttling(bedrock: tuple[FakeBedrock, str]) -> None:
    fake, url = bedrock
    fake.faults = AwsFaults(status=429, code="ModelNotReadyException")
    with pytest.raises(ClientError) as info:
        boto3_client("bedrock-runtime", url).invoke_model(
            modelId=MODEL_ID, body=json.dumps({"query": "q", "documents": ["d"], "api_version": 2})
        )
    assert info.value.response["Error"]["Code"] == "ModelNotReadyException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_unknown_profile_is_an_auth_problem_named_by_class(
    bedrock: tuple[FakeBedrock, str], start_gateway: Callable[..., str]
) -> None:
    fake, url = bedrock
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(config(url, profile="nope"))).rerank(
            model="rerank-v3.5", query=QUERY, documents=DOCS
        )
    assert info.value.status_code == 502
    assert (
        "bedrock-use1: loading AWS credentials failed (ProfileNotFound)"
        in info.value.body["message"]
    )
    assert fake.calls == []


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"region": "US East"}, "region must be an AWS region like us-east-1"),
        ({"api": "converse"}, "api: must be one of invoke, rerank"),
        (
            {"api": "rerank", "api_key": "k"},
            "api_key (a Bedrock API key) works with api: invoke only",
        ),
        ({"api_key": "k", "profile": "p"}, "give either api_key or profile, not both"),
        ({"endpoint_url": "bedrock.local"}, "endpoint_url must start with http:// or https://"),
        ({"timeout_s": 0}, "timeout_s: must be at least 0.001"),
        ({"region": None}, "providers.br.region: is required"),
    ],
)
def test_bedrock_config_is_validated(settings: dict, problem: str) -> None:
    entry = {
        k: v
        for k, v in {"type": "bedrock", "region": "us-east-1", **settings}.items()
        if v is not None
    }
    with pytest.raises(ConfigError) as info:
        parse_config(one_model("br", entry, "m", "m"), {})
    assert problem in str(info.value)


async def test_fake_takes_bearer_keys_on_invoke_only(bedrock: tuple[FakeBedrock, str]) -> None:
    _, base = bedrock
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        invoke = yarl.URL(base + "/model/cohere.rerank-v3-5%3A0/invoke", encoded=True)
        body = {"query": "q", "documents": ["d"], "api_version": 2}
        async with session.post(invoke, json=body, headers=headers) as resp:
            assert resp.status == 200
        async with session.post(
            base + "/rerank", json=rerank_request(["d"]), headers=headers
        ) as resp:
            assert resp.status == 403
            assert resp.headers["x-amzn-ErrorType"].startswith("IncompleteSignatureException:")
