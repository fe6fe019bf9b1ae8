"""Nothing the caller sent leaks into logs or Redis, whichever way a request fails:
bad keys, upstreams whose error messages echo the query and documents, refused cloud
credentials, over-fetch rejections, unreadable bodies. The caller still gets the
upstream's message; the access log keeps only its status and code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import redis
import structlog

from gateway.http.auth import hash_key
from tests.conftest import ADMIN_KEY, REDIS_URL, TEAM_KEY, gateway_config
from tests.fakes.azure import FakeAzure
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.servers import ServerLoop

QUERY = "confidential merger plans"
DOCS = ["private memo about acme", "secret salary table"]
BODY = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}
SECRETS = (QUERY, "confidential", "merger", *DOCS, "acme", "salary", TEAM_KEY, ADMIN_KEY)
SECRETS_AND_DIGEST = (*SECRETS, hash_key(TEAM_KEY), "leaked-key", "upstream-key", "revoked-key")


@dataclass
class EchoingCohere(FakeCohere):
    """An upstream whose error messages quote what it was sent (some real ones do)."""

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        if self.calls:
            last = self.calls[-1]
            message = f"{message}: cannot rank {last['documents']!r} for {last['query']!r}"
        return super().error(status, message, headers)


async def post_raw(url: str, body: Any, headers: dict[str, str], path: str = "/v2/rerank") -> tuple:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_no_secrets(logs: list[dict[str, Any]]) -> None:
    dumped = repr(logs)
    for secret in SECRETS_AND_DIGEST:
        assert secret not in dumped, secret


async def test_upstream_errors_echoing_the_request_reach_the_caller_but_not_the_logs(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = EchoingCohere()
    upstream = servers.serve(fake.app())
    answers = []
    with structlog.testing.capture_logs() as logs:
        for status in (400, 422, 429, 500, 503):
            fake.faults = Faults(status=status)
            # A gateway each, so no breaker opened by the last failures answers instead.
            url = start_gateway(gateway_config({"cohere-a": upstream}))
            answers.append(await post_raw(url, BODY, bearer(TEAM_KEY)))
    assert [status for status, _ in answers] == [400, 422, 429, 503, 503]
    for _, raw in answers:  # the caller is told what the upstream said
        assert "secret salary table" in orjson.loads(raw)["message"]
    lines = [e for e in logs if e["event"] == "rerank"]
    assert len(lines) == 5
    assert lines[0]["error"] == (
        "the upstream rejected the request: upstream status, status 400, code None"
    )
    assert "upstream status, status 503" in lines[4]["error"]
    assert_no_secrets(logs)


async def test_refused_cloud_credentials_leak_nothing(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeAzure(envelope="azure")
    provider = {
        "type": "azure",
        "base_url": servers.serve(fake.app()),
        "api_key": "revoked-key",
        "timeout_s": 5,
    }
    data = gateway_config({})
    data["providers"]["azure-swc"] = provider
    data["models"]["rerank-v3.5"]["deployments"] = [{"provider": "azure-swc"}]
    url = start_gateway(data)
    with structlog.testing.capture_logs() as logs:
        status, raw = await post_raw(url, BODY, bearer(TEAM_KEY))
    assert status == 502
    assert "a gateway configuration problem" in orjson.loads(raw)["message"]
    assert [e["event"] for e in logs] == ["upstream_auth_failed", "rerank"]
    assert_no_secrets(logs)


async def test_every_caller_mistake_is_logged_without_text_or_keys(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    data = gateway_config({"cohere-a": fake_cohere[1]}, server={"max_body_bytes": 8192})
    url = start_gateway(data)
    too_many = {**BODY, "documents": [f"secret salary table {i}" for i in range(101)]}
    cases: list[tuple[Any, dict[str, str], str]] = [
        (BODY, bearer("leaked-key"), "/v2/rerank"),
        (BODY, {"Authorization": f"Basic {TEAM_KEY}"}, "/v2/rerank"),
        (too_many, bearer(TEAM_KEY), "/v2/rerank"),  # over-fetch: 400
        ({**BODY, "documents": ["secret salary table " * 500]}, bearer(TEAM_KEY), "/v1/rerank"),
        ({**BODY, "model": "secret salary table"}, bearer(TEAM_KEY), "/v2/rerank"),
        ({**BODY, "top_n": "secret salary table"}, bearer(TEAM_KEY), "/v2/rerank"),
        ({**BODY, "documents": [{"title": "secret salary table"}]}, bearer(TEAM_KEY), "/v1/rerank"),
        (orjson.dumps(BODY)[:-3], bearer(TEAM_KEY), "/v2/rerank"),
        (
            orjson.dumps(BODY),
            {**bearer(TEAM_KEY), "X-Latency-Budget-Ms": "9" * 5000},
            "/v2/rerank",
        ),
        (
            orjson.dumps(BODY),
            {**bearer(TEAM_KEY), "Content-Encoding": "gzip", "Expect": "100-continue"},
            "/v2/rerank",
        ),
    ]
    with structlog.testing.capture_logs() as logs:
        statuses = [(await post_raw(url, body, headers, path))[0] for body, headers, path in cases]
    assert statuses == [401, 401, 400, 413, 404, 400, 400, 400, 400, 400]
    assert len([e for e in logs if e["event"] == "rerank"]) == len(cases)
    assert_no_secrets(logs)


async def test_redis_holds_no_text(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    redis_client: redis.Redis,
    cache_prefix: str,
) -> None:
    data = gateway_config(
        {"cohere-a": fake_cohere[1]},
        cache={"backend": "redis", "key_prefix": cache_prefix},
        state={"redis_url": REDIS_URL},
        limits={"limits_backend": "redis", "redis_prefix": cache_prefix + "gov:"},
    )
    url = start_gateway(data)
    assert (await post_raw(url, BODY, bearer(TEAM_KEY)))[0] == 200
    assert (await post_raw(url, {**BODY, "documents": DOCS * 60}, bearer(TEAM_KEY)))[0] == 400
    keys = list(redis_client.scan_iter(match=cache_prefix + "*", count=1000))
    assert keys  # the cache and the usage counters wrote something
    stored = []
    for key in keys:
        kind = redis_client.type(key).decode()
        value = {
            "string": lambda k: redis_client.get(k),
            "hash": lambda k: redis_client.hgetall(k),
            "zset": lambda k: redis_client.zrange(k, 0, -1, withscores=True),
            "list": lambda k: redis_client.lrange(k, 0, -1),
            "set": lambda k: redis_client.smembers(k),
        }[kind](key)
        stored.append((key, value))
    dumped = repr(stored)
    for secret in SECRETS:
        assert secret not in dumped and repr(secret.encode())[2:-1] not in dumped, secret
