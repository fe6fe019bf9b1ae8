"""/openapi.json describes what the gateway really accepts and returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import jsonschema
import pytest
import redis

from gateway.errors import ApiError
from gateway.http.openapi import public_spec
from gateway.http.wire import parse_request
from gateway.http.wire_types import MAX_INT32
from tests.conftest import ADMIN_KEY, TEAM_KEY, scratch_prefix
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.keys import call, replicas_config, start_replicas
from tests.support.servers import ServerLoop


async def get_json(url: str, headers: dict | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


def validator(spec: dict, name: str) -> jsonschema.Draft202012Validator:
    # Components resolve against the document root, as OpenAPI 3.1 refs do.
    return jsonschema.Draft202012Validator({**spec, "$ref": f"#/components/schemas/{name}"})


@pytest.fixture
async def spec(gateway_url: str) -> dict:
    status, doc = await get_json(gateway_url + "/openapi.json")
    assert status == 200
    return doc


async def test_spec_lists_the_public_routes(spec: dict) -> None:
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {
        "/v2/rerank",
        "/v1/rerank",
        "/v1/models",
        "/v1/models/{model}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    for name in ("RerankRequestV2", "RerankRequestV1", "RerankResponse", "Error", "Model"):
        jsonschema.Draft202012Validator.check_schema(spec["components"]["schemas"][name])


@pytest.mark.parametrize(
    ("path", "body", "schema"),
    [
        (
            "/v2/rerank",
            {"model": "rerank-v3.5", "query": "q a", "documents": ["a", "b"], "top_n": 1},
            "RerankRequestV2",
        ),
        (
            "/v2/rerank",
            {
                "model": "rerank-v3.5",
                "query": "q",
                "documents": ["a"],
                "top_n": None,
                "max_tokens_per_doc": None,
                "priority": 3,
            },
            "RerankRequestV2",
        ),
        (
            "/v1/rerank",
            {
                "model": "rerank-v3.5",
                "query": "q",
                "documents": [{"text": "a", "id": "x"}, "b"],
                "return_documents": True,
                "rank_fields": ["text"],
            },
            "RerankRequestV1",
        ),
    ],
)
async def test_accepted_requests_and_their_answers_match_the_schemas(
    spec: dict, gateway_url: str, path: str, body: dict, schema: str
) -> None:
    validator(spec, schema).validate(body)
    status, _, answer = await post(gateway_url, body, path=path)
    assert status == 200
    validator(spec, "RerankResponse").validate(answer)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_k": 1}, 422),
        ({"model": "rerank-v3.5", "query": "q", "documents": []}, 400),
        ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": 0}, 400),
        ({"query": "q", "documents": ["a"]}, 400),
    ],
)
async def test_rejected_requests_violate_the_schema_and_errors_match(
    spec: dict, gateway_url: str, body: dict, status: int
) -> None:
    assert not validator(spec, "RerankRequestV2").is_valid(body)
    got, _, answer = await post(gateway_url, body)
    assert got == status
    assert str(status) in spec["paths"]["/v2/rerank"]["post"]["responses"]
    validator(spec, "Error").validate(answer)


async def test_upstream_and_auth_errors_match_the_error_schema(
    spec: dict, gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
    got, _, answer = await post(gateway_url, body, "nope")
    assert got == 401
    validator(spec, "Error").validate(answer)
    fake_cohere[0].faults = Faults(status=503)
    got, _, answer = await post(gateway_url, body)
    assert got == 503
    validator(spec, "Error").validate(answer)


async def test_admin_spec_needs_the_admin_key(gateway_url: str) -> None:
    status, body = await get_json(gateway_url + "/admin/openapi.json")
    assert status == 401 and "no admin key supplied" in body["message"]
    status, body = await get_json(
        gateway_url + "/admin/openapi.json", {"Authorization": f"Bearer {TEAM_KEY}"}
    )
    assert status == 401
    status, doc = await get_json(
        gateway_url + "/admin/openapi.json", {"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert status == 200
    assert all(path.startswith("/admin/") for path in doc["paths"])


async def test_usage_report_matches_the_admin_schema(gateway_url: str) -> None:
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}
    assert (await post(gateway_url, body))[0] == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    _, doc = await get_json(gateway_url + "/admin/openapi.json", admin)
    status, report = await get_json(gateway_url + "/admin/usage?team=search", admin)
    assert status == 200 and report["rows"][0]["requests"] == 1
    validator(doc, "UsageReport").validate(report)


# --- the documents allow what the handlers accept, no more and no less ------------------
#
# Each body below is checked against its schema and given to the handler; the two must
# agree. Rules a schema cannot state (an ISO 8601 time, a key's lifetime, a document's
# `text` field, documents x chunks) are said in the descriptions and tested with their
# routes (tests/gateway/state/test_key_lifetimes.py, test_wire.py).

RERANK_CHANGES: list[dict[str, Any]] = [
    {},
    {"top_n": 0},
    {"top_n": 1},
    {"top_n": 3.0},
    {"top_n": 1.5},
    {"top_n": "1"},
    {"top_n": None},
    {"top_n": MAX_INT32},
    {"top_n": MAX_INT32 + 1},
    {"max_tokens_per_doc": 0},
    {"max_tokens_per_doc": MAX_INT32 + 1},
    {"priority": -1},
    {"priority": 0},
    {"priority": 999},
    {"priority": 1000},
    {"max_chunks_per_doc": 0},
    {"max_chunks_per_doc": 9999},
    {"max_chunks_per_doc": 10_000},
    {"query": ""},
    {"query": "   "},
    {"query": 5},
    {"documents": []},
    {"documents": [5]},
    {"documents": ["a"] * 10_001},
    {"documents": [{"text": "a", "id": "x"}]},
    {"model": ""},
    {"model": None},
    {"return_documents": True},
    {"return_documents": "yes"},
    {"rank_fields": []},
    {"rank_fields": ["text"]},
    {"rank_fields": "text"},
    {"relevant_spans": {"mode": "enabled"}},
    {"relevant_spans": {"mode": "disabled", "threshold": 0.5, "max_spans": 3}},
    {"relevant_spans": {"mode": "on"}},
    {"relevant_spans": {}},
    {"relevant_spans": {"mode": "enabled", "threshold": 1.5}},
    {"relevant_spans": {"mode": "enabled", "max_spans": 0}},
    {"relevant_spans": {"mode": "enabled", "max_spans": MAX_INT32 + 1}},
    {"relevant_spans": {"mode": "enabled", "colour": "red"}},
    {"relevant_spans": "enabled"},
    {"top_k": 1},
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("change", RERANK_CHANGES, ids=lambda c: repr(c)[:60])
def test_the_rerank_schemas_allow_exactly_the_bodies_the_parser_accepts(
    version: int, change: dict[str, Any]
) -> None:
    """Was: the schemas were written apart from the parser, and said nothing of the upper
    bounds of top_n, max_tokens_per_doc and max_spans that the parser enforces."""
    spec = public_spec()
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a"], **change}
    allowed = validator(spec, f"RerankRequestV{version}").is_valid(body)
    try:
        parse_request(body, version)
        accepted = True
    except ApiError:
        accepted = False
    assert allowed == accepted, (version, body)


CREATE_BODIES: list[dict[str, Any]] = [
    {"team": "search"},
    {"team": "search", "name": "ci", "scopes": ["rerank"], "models": ["rerank-v3.5"]},
    {"team": "search", "name": None, "expires_in_s": None},
    {"team": "search", "expires_in_s": 60},
    {"team": "search", "expires_in_s": 0},
    {"team": "search", "expires_in_s": "60"},
    {"team": "search", "expires_in_s": True},
    {"team": "search", "expires_in_s": 400_000_000},
    {"team": 5},
    {"team": "search", "name": 5},
    {"team": "search", "scopes": ["root"]},
    {"team": "search", "scopes": "rerank"},
    {"team": "search", "models": []},
    {"team": "search", "models": [5]},
    {"team": "search", "colour": "red"},
    {"team": "search", "colour": None},
]
ROTATE_BODIES: list[dict[str, Any]] = [
    {},
    {"grace_s": 0},
    {"grace_s": 60.5, "expires_in_s": 600},
    {"grace_s": None, "never_expires": True},
    {"grace_s": -1},
    {"grace_s": 315_360_001},
    {"grace_s": "1h"},
    {"never_expires": "yes"},
    {"expires_in_s": -5},
    {"old": True},
]


@pytest.fixture
def key_url(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], redis_client: redis.Redis
) -> Iterator[str]:
    """A gateway with API keys, under a Redis prefix of this test's own."""
    for prefix in scratch_prefix(redis_client, "rg-test-openapi-"):
        data = replicas_config(fake_cohere[1], prefix)
        yield start_replicas(servers, data, prefix, redis_client, count=1).urls[0]


async def test_the_key_schemas_allow_exactly_the_bodies_the_key_routes_accept(
    key_url: str,
) -> None:
    """The admin document's CreateKey and RotateKey against POST /admin/keys and
    /admin/keys/{id}/rotate, body by body: 201 where the schema allows, 400 where not."""
    _, doc = await get_json(key_url + "/admin/openapi.json", {"Authorization": f"Bearer {ADMIN_KEY}"})
    for body in CREATE_BODIES:
        status, answer = await call("POST", key_url + "/admin/keys", body=body)
        assert status in (201, 400), answer
        assert validator(doc, "CreateKey").is_valid(body) == (status == 201), (body, answer)
        if status == 201:
            validator(doc, "IssuedKey").validate(answer)
    _, key = await call("POST", key_url + "/admin/keys", body={"team": "search"})
    for body in ROTATE_BODIES:
        status, answer = await call("POST", key_url + f"/admin/keys/{key['id']}/rotate", body=body)
        assert status in (201, 400), answer
        assert validator(doc, "RotateKey").is_valid(body) == (status == 201), (body, answer)
        if status == 201:
            validator(doc, "IssuedKey").validate(answer)
            key = answer  # the next rotation starts from the newest key
    status, listing = await call("GET", key_url + "/admin/keys?team=search")
    assert status == 200
    validator(doc, "KeyList").validate(listing)
    status, revoked = await call("DELETE", key_url + f"/admin/keys/{key['id']}")
    assert status == 200
    validator(doc, "RevokedKey").validate(revoked)


async def test_admin_reports_match_the_admin_schema(gateway_url: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    _, doc = await get_json(gateway_url + "/admin/openapi.json", admin)
    for path, schema in (
        ("/admin/deployments", "Deployments"),
        ("/admin/tiers", "TiersReport"),
        ("/admin/status.json", "StatusReport"),
    ):
        status, report = await get_json(gateway_url + path, admin)
        assert status == 200
        validator(doc, schema).validate(report)
