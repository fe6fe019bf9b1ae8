"""/openapi.json describes what the gateway really accepts and returns."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.fakes.cohere import FakeCohere, Faults

AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}


async def get_json(url: str, headers: dict | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def post(url: str, body: Any, headers: dict | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json=body, headers=headers or AUTH) as resp,
    ):
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
    status, answer = await post(gateway_url + path, body)
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
    got, answer = await post(gateway_url + "/v2/rerank", body)
    assert got == status
    assert str(status) in spec["paths"]["/v2/rerank"]["post"]["responses"]
    validator(spec, "Error").validate(answer)


async def test_upstream_and_auth_errors_match_the_error_schema(
    spec: dict, gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
    got, answer = await post(gateway_url + "/v2/rerank", body, {"Authorization": "Bearer nope"})
    assert got == 401
    validator(spec, "Error").validate(answer)
    fake_cohere[0].faults = Faults(status=503)
    got, answer = await post(gateway_url + "/v2/rerank", body)
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
    assert (await post(gateway_url + "/v2/rerank", body))[0] == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    _, doc = await get_json(gateway_url + "/admin/openapi.json", admin)
    status, report = await get_json(gateway_url + "/admin/usage?team=search", admin)
    assert status == 200 and report["rows"][0]["requests"] == 1
    validator(doc, "UsageReport").validate(report)
