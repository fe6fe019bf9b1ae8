"""The `vertex` provider against the strict Vertex AI ranking fake and its OAuth token
endpoint: the signed JWT grant, the token kept and reused, records by index, rounded
scores, split at 200 records, per-query units, Google's errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import ConfigError, parse_config
from providers.google_auth import load_service_account
from tests.fakes.cohere import Faults
from tests.fakes.vertex import ACCOUNT, PROJECT, SCOPE, FakeVertex, vertex_score
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

DOCS = MANY_DOCS[:12]
MODEL = "semantic-ranker-default-004"


@pytest.fixture
def vertex(servers: ServerLoop) -> tuple[FakeVertex, str]:
    fake = FakeVertex()
    return fake, servers.serve(fake.app())


def settings(fake: FakeVertex, url: str, tmp_path: Path, **more: object) -> dict[str, object]:
    key_file = tmp_path / "sa.json"
    key_file.write_text(fake.service_account(url + "/token"))
    return {
        "type": "vertex",
        "project": PROJECT,
        "base_url": url,
        "credentials_file": str(key_file),
        "timeout_s": 5,
        **more,
    }


def vertex_order(docs: list[str]) -> list[int]:
    """The order the gateway gives: by the rounded score, ties in input order."""
    return sorted(range(len(docs)), key=lambda i: (-vertex_score(QUERY, docs[i]), i))


def test_serves_v2_and_v1_with_a_signed_grant(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    data = uncached(provider_config({"gcp": settings(fake, url, tmp_path)}, "vertex", MODEL))
    scores = serves_v2_and_v1(
        start_gateway(data), "vertex", DOCS, vertex_order(DOCS), scale="calibrated"
    )
    assert scores == sorted((vertex_score(QUERY, d) for d in DOCS), reverse=True)[:3]
    assert all(s == round(s, 2) for s in scores)  # Vertex's two decimals, passed on
    assert fake.calls[0] == {
        "model": MODEL,
        "query": QUERY,
        "records": [{"id": str(i), "content": d} for i, d in enumerate(DOCS)],
        "ignoreRecordDetailsInResponse": True,
    }
    assert fake.requested == [
        f"/v1/projects/{PROJECT}/locations/global/rankingConfigs/default_ranking_config:rank"
    ] * 2
    # One grant, verified by the fake against the account's public key, for both calls.
    assert len(fake.grants) == 1
    grant = fake.grants[0]
    assert (grant["iss"], grant["scope"], grant["aud"]) == (ACCOUNT, SCOPE, url + "/token")
    assert grant["exp"] - grant["iat"] == 3600
    assert fake.headers[0]["Authorization"] == fake.headers[1]["Authorization"]
    assert "X-Goog-User-Project" not in fake.headers[0]


def test_token_url_overrides_the_key_files_and_quota_project_is_sent(
    vertex: tuple[FakeVertex, str], servers: ServerLoop, tmp_path: Path
) -> None:
    fake, url = vertex
    opts = settings(fake, url, tmp_path, token_url=url + "/token", quota_project="billing-proj")
    opts.pop("type")
    Path(str(opts["credentials_file"])).write_text(fake.service_account("http://127.0.0.2:9/x"))
    direct(servers, "vertex", opts, DOCS[:2], model=MODEL)
    assert len(fake.grants) == 1
    assert fake.headers[0]["X-Goog-User-Project"] == "billing-proj"


def test_records_split_at_200_and_billed_per_100(
    vertex: tuple[FakeVertex, str], servers: ServerLoop, tmp_path: Path
) -> None:
    fake, url = vertex
    fake.max_records = 40
    opts = settings(fake, url, tmp_path, max_batch_size=40)
    opts.pop("type")
    docs = MANY_DOCS[:90]
    result = direct(servers, "vertex", opts, docs, model=MODEL)
    assert sorted(len(c["records"]) for c in fake.calls) == [10, 40, 40]
    assert result.scores == [vertex_score(QUERY, d) for d in docs]
    assert result.search_units == 3  # one query per request of at most 100 records
    assert result.tokens is None  # Vertex reports no usage
    fake.max_records = 200
    whole = direct(servers, "vertex", {**opts, "max_batch_size": 200}, MANY_DOCS, model=MODEL)
    assert whole.search_units == math.ceil(100 / 100)


def test_empty_documents_are_not_sent_and_score_zero(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    gateway = start_gateway(provider_config({"gcp": settings(fake, url, tmp_path)}, "v", MODEL))
    body = {"model": "v", "query": QUERY, "documents": ["", DOCS[3], ""]}
    resp = post_sync(gateway, body)
    assert resp.status_code == 200, resp.text
    scores = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    assert scores == {0: 0.0, 1: vertex_score(QUERY, DOCS[3]), 2: 0.0}
    assert fake.calls[0]["records"] == [{"id": "0", "content": DOCS[3]}]


def test_a_key_the_token_endpoint_refuses_is_a_gateway_problem(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    opts = settings(fake, url, tmp_path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    Path(str(opts["credentials_file"])).write_text(fake.service_account(url + "/token", other))
    resp = post_sync(
        start_gateway(provider_config({"gcp": opts}, "v", MODEL)),
        {"model": "v", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 502
    message = resp.json()["message"]
    assert "gcp: the token endpoint answered 400 invalid_grant: Invalid JWT Signature." in message
    assert "a gateway configuration problem" in message
    assert fake.calls == []


def test_a_missing_key_file_lets_the_gateway_start_and_fails_the_deployment(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    opts = settings(fake, url, tmp_path, credentials_file=str(tmp_path / "absent.json"))
    resp = post_sync(
        start_gateway(provider_config({"gcp": opts}, "v", MODEL)),
        {"model": "v", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 502
    assert "loading Google service-account credentials failed" in resp.json()["message"]


def test_a_token_endpoint_outage_is_retried_then_served(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    fake.token_failures = 1
    data = provider_config({"gcp": settings(fake, url, tmp_path)}, "v", MODEL, max_attempts=2)
    resp = post_sync(start_gateway(data), {"model": "v", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 200, resp.text
    assert len(fake.grants) == 1


@pytest.mark.parametrize(
    ("status", "caller", "code"),
    [(429, 429, "RESOURCE_EXHAUSTED"), (503, 503, "UNAVAILABLE"), (400, 400, "INVALID_ARGUMENT")],
)
def test_google_errors_map_to_the_caller(
    vertex: tuple[FakeVertex, str],
    start_gateway: Callable[..., str],
    tmp_path: Path,
    status: int,
    caller: int,
    code: str,
) -> None:
    fake, url = vertex
    fake.faults = Faults(status=status, retry_after="5")
    gateway = start_gateway(provider_config({"gcp": settings(fake, url, tmp_path)}, "v", MODEL))
    resp = post_sync(gateway, {"model": "v", "query": QUERY, "documents": DOCS})
    assert resp.status_code == caller
    assert f"gcp answered {status} {code}: injected failure {status}" in resp.json()["message"]


def test_a_wrong_project_is_a_gateway_problem(
    vertex: tuple[FakeVertex, str], start_gateway: Callable[..., str], tmp_path: Path
) -> None:
    fake, url = vertex
    opts = settings(fake, url, tmp_path, project="someone-elses")
    resp = post_sync(
        start_gateway(provider_config({"gcp": opts}, "v", MODEL)),
        {"model": "v", "query": QUERY, "documents": DOCS},
    )
    assert resp.status_code == 502
    assert "gcp answered 403 PERMISSION_DENIED" in resp.json()["message"]


def test_the_fake_refuses_unknown_names_as_google_does(vertex: tuple[FakeVertex, str]) -> None:
    fake, url = vertex
    fake.issued.add("t")
    route = url + f"/v1/projects/{PROJECT}/locations/global/rankingConfigs/default_ranking_config:rank"
    body = {"query": QUERY, "records": [{"id": "0", "content": "a"}], "documents": ["a"]}
    resp = httpx.post(route, json=body, headers={"Authorization": "Bearer t"})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == (
        'Invalid JSON payload received. Unknown name "documents": Cannot find field.'
    )
    proto_names = {"query": QUERY, "records": [{"id": "0", "title": "a"}], "top_n": 1}
    assert httpx.post(route, json=proto_names, headers={"Authorization": "Bearer t"}).is_success


def test_service_account_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a service-account key"):
        load_service_account('{"type": "authorized_user"}', None)
    with pytest.raises(ValueError, match="lacks client_email, private_key"):
        load_service_account('{"type": "service_account", "private_key_id": "k"}', None)
    with pytest.raises(ValueError, match="private_key is not a PEM RSA key"):
        load_service_account(
            '{"type": "service_account", "client_email": "a", "private_key": "x", '
            '"private_key_id": "k"}',
            None,
        )


def test_config_is_validated() -> None:
    data = provider_config(
        {"g": {"type": "vertex", "project": "a/b", "credentials_file": "x"}}, "m", MODEL
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert "providers.g" in str(info.value)
    assert "project must be a non-empty name without '/'" in str(info.value)
