"""The HTTP edge: auth, headers, probes, metrics, size limits, error shapes, logs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import aiohttp
import orjson
import pytest
import structlog

from gateway.http.auth import hash_key
from gateway.http.edge import new_uuid
from tests.conftest import OTHER_TEAM_KEY, REDIS_URL, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.servers import free_port

BODY = {
    "model": "rerank-v3.5",
    "query": "secret query words",
    "documents": ["private doc one", "doc two"],
}


async def request(method: str, url: str, **kwargs) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def bearer(key: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {key}"}


async def test_bearer_scheme_is_case_insensitive(gateway_url: str) -> None:
    status, _, _ = await request(
        "POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY, "bearer")
    )
    assert status == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no api key supplied"),
        ({"Authorization": "Basic abc"}, "no api key supplied"),
        ({"Authorization": "Bearer nope"}, "invalid api token"),
    ],
)
async def test_missing_or_unknown_key_is_401(gateway_url: str, headers: dict, message: str) -> None:
    status, _, body = await request("POST", gateway_url + "/v2/rerank", json=BODY, headers=headers)
    assert status == 401
    assert message in body.decode()


async def test_request_id_keeps_the_callers_behind_a_unique_prefix_or_is_generated(
    gateway_url: str,
) -> None:
    """Was the caller's id as sent: any team could give its request another team's id."""
    ids = []
    for _ in range(2):
        _, headers, _ = await request(
            "POST",
            gateway_url + "/v2/rerank",
            json=BODY,
            headers={**bearer(TEAM_KEY), "X-Request-Id": "trace-123"},
        )
        ids.append(headers["X-Request-Id"])
    assert all(re.fullmatch(r"[0-9a-f]{12}-trace-123", rid) for rid in ids), ids
    assert ids[0] != ids[1]  # the same caller id twice: two ids
    _, headers, _ = await request(
        "POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY)
    )
    assert len(headers["X-Request-Id"]) == 36


async def test_body_over_the_limit_is_413_in_cohere_shape(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(
        gateway_config({"cohere-a": fake_cohere[1]}, server={"max_body_bytes": 2048})
    )
    body = {**BODY, "documents": ["x" * 1000] * 5}
    status, headers, raw = await request(
        "POST", url + "/v2/rerank", json=body, headers=bearer(TEAM_KEY)
    )
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert b"the limit is 2048 bytes" in raw
    assert fake_cohere[0].calls == []


async def test_unknown_route_and_method_are_json(gateway_url: str) -> None:
    status, headers, raw = await request("POST", gateway_url + "/v3/rerank", json=BODY)
    assert status == 404 and b"use POST /v2/rerank" in raw
    assert headers["Content-Type"].startswith("application/json")
    status, headers, raw = await request("GET", gateway_url + "/v2/rerank")
    assert status == 405 and b'"message"' in raw
    assert headers["Allow"] == "POST"  # a 405 says which methods the route takes
    status, headers, _ = await request("DELETE", gateway_url + "/v1/models")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


async def test_healthz_and_readyz_with_real_redis(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], redis_client
) -> None:
    url = start_gateway(
        gateway_config({"cohere-a": fake_cohere[1]}, state={"redis_url": REDIS_URL})
    )
    assert (await request("GET", url + "/healthz"))[0] == 200
    status, _, body = await request("GET", url + "/readyz")
    assert status == 200
    assert orjson.loads(body) == {"status": "ready", "checks": {"redis": "ok"}}


async def test_readyz_stays_ready_but_degraded_when_redis_is_unreachable(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    # A Redis outage must not empty the Service: requests are still answered.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}, state={"redis_url": dead}))
    status, _, body = await request("GET", url + "/readyz")
    assert status == 200
    report = orjson.loads(body)
    assert report["status"] == "degraded" and report["degraded"] == ["redis"]
    assert report["checks"]["redis"].startswith("unreachable")
    _, _, metrics = await request("GET", url + "/metrics")
    assert b'rerank_dependency_up{dependency="redis"} 0.0' in metrics
    status, _, _ = await request("POST", url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY))
    assert status == 200  # served: cache misses, the rate limit (none here) would fail open
    assert (await request("GET", url + "/healthz"))[0] == 200


async def test_readyz_requires_redis_when_the_operator_opts_in(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    data = gateway_config(
        {"cohere-a": fake_cohere[1]},
        state={"redis_url": dead},
        server={"ready_requires_redis": True},
    )
    status, _, body = await request("GET", start_gateway(data) + "/readyz")
    assert status == 503
    assert orjson.loads(body)["status"] == "not ready"


async def test_readyz_fails_only_when_no_model_can_be_served(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, base = fake_cohere
    fake.faults.status = 500
    breaker = {"breaker": {"failures": 2, "cooldown_s": 300}}
    # While local-bm25 can still serve, open breakers only make the gateway degraded...
    url = start_gateway(gateway_config({"cohere-a": base}, routing=breaker))
    for _ in range(3):
        await request("POST", url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY))
    status, _, body = await request("GET", url + "/readyz")
    report = orjson.loads(body)
    assert status == 200 and report["degraded"] == ["breakers"]
    assert report["checks"]["breakers"] == "open: cohere-a/rerank-v3.5"
    # ...with no other model, the gateway cannot serve anything: not ready.
    data = gateway_config({"cohere-a": base}, routing=breaker)
    del data["models"]["local-bm25"]
    url = start_gateway(data)
    for _ in range(3):
        await request("POST", url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY))
    status, _, body = await request("GET", url + "/readyz")
    assert status == 503 and "no model can be served" in orjson.loads(body)["checks"]["models"]


async def test_metrics_count_requests_by_team_model_status(gateway_url: str) -> None:
    await request("POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY))
    await request("POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer(OTHER_TEAM_KEY))
    await request(
        "POST",
        gateway_url + "/v2/rerank",
        json={**BODY, "model": "x" * 40},
        headers=bearer(TEAM_KEY),
    )
    _, _, raw = await request("GET", gateway_url + "/metrics")
    text = raw.decode()
    assert 'rerank_requests_total{model="rerank-v3.5",status="200",team="search"} 1.0' in text
    assert 'rerank_requests_total{model="rerank-v3.5",status="200",team="ads"} 1.0' in text
    # Unknown model names do not become label values.
    assert 'rerank_requests_total{model="unknown",status="404",team="search"} 1.0' in text
    # The second team's identical request is answered by the (shared) score cache.
    assert 'rerank_upstream_duration_seconds_count{deployment="cohere-a/rerank-v3.5"} 1.0' in text
    assert 'rerank_cache_lookups_total{result="hit"} 1.0' in text


async def test_access_log_has_the_facts_and_no_text_or_keys(gateway_url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        await request("POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer(TEAM_KEY))
        await request("POST", gateway_url + "/v2/rerank", json=BODY, headers=bearer("leaked-key?"))
    lines = [entry for entry in logs if entry["event"] == "rerank"]
    assert [(e["team"], e["status"], e["documents"]) for e in lines] == [
        ("search", 200, 2),
        ("unknown", 401, 0),
    ]
    assert lines[0]["deployment"] == "cohere-a/rerank-v3.5"
    dumped = repr(logs)
    for secret in ("secret query", "private doc", TEAM_KEY, "leaked-key", hash_key(TEAM_KEY)):
        assert secret not in dumped


async def test_a_body_nested_too_deep_is_refused_before_the_upstream_and_unbilled(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    """Was: 300 levels with return_documents went upstream, was billed, then a 500."""
    fake, upstream = fake_cohere
    url = start_gateway(gateway_config({"cohere-a": upstream}))
    doc = '{"x":' * 299 + '{"text": "deep"}' + "}" * 299
    raw = '{"model": "rerank-v3.5", "query": "q", "return_documents": true, "documents": ['
    status, _, body = await request(
        "POST",
        url + "/v2/rerank",
        data=(raw + doc + "]}").encode(),
        headers={**bearer(TEAM_KEY), "Content-Type": "application/json"},
    )
    answer = orjson.loads(body)
    assert status == 400 and "levels deep" in answer["message"]
    assert fake.calls == []  # never sent upstream, so nothing to bill
    _, _, metrics = await request("GET", url + "/metrics")
    text = metrics.decode()
    assert 'rerank_requests_total{model="unknown",status="400",team="search"} 1.0' in text
    assert "rerank_search_units_total{" not in text


def test_request_ids_are_random_uuids_written_as_uuid4_writes_them() -> None:
    seen = {new_uuid() for _ in range(20_000)}
    assert len(seen) == 20_000
    shape = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    for text in list(seen)[:500]:
        assert shape.fullmatch(text)
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
