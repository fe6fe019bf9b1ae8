"""Helpers for the cost-governance tests: governed configs, metrics and GET calls, an
async Redis client that queues for connections as the gateway's do."""

from __future__ import annotations

from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, gateway_config


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        return await resp.text()


async def get(url: str, key: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


def async_redis(url: str = REDIS_URL, connections: int = 32) -> aioredis.Redis:
    """An async client whose concurrent callers queue for a connection, as the gateway's do."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=connections)
    return aioredis.Redis(connection_pool=pool)


def governed(
    upstreams: dict[str, str],
    *,
    backend: str = "memory",
    prefix: str = "",
    search: dict[str, Any] | None = None,
    ads: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """`gateway_config` with team settings for `search` and `ads`, on the given backend.

    The score cache is off unless a test turns it on: repeated bodies must reach the
    governor (cache hits are not rate limited or billed).
    """
    sections.setdefault("cache", {"backend": "none"})
    data = gateway_config(upstreams, **sections)
    data["teams"]["search"].update(search or {})
    data["teams"]["ads"].update(ads or {})
    data["limits"] = dict(limits or {})
    if backend == "redis":
        data.setdefault("state", {})
        data["state"].setdefault("redis_url", REDIS_URL)
        data["limits"].update(limits_backend="redis", redis_prefix=prefix)
    return data


def tiered(upstream: str, **sections: Any) -> dict[str, Any]:
    """`governed` over one Cohere upstream that serves both tiers of the alias `rerank-4`
    (pro `rerank-v4.0-pro`, fast `rerank-v4.0-fast`); `sections` as for `governed`."""
    data = governed({"cohere-a": upstream}, **sections)
    for model in ("rerank-v4.0-pro", "rerank-v4.0-fast"):
        data["models"][model] = {"deployments": [{"provider": "cohere-a", "model": model}]}
    data["models"]["rerank-4"] = {"tiers": {"pro": "rerank-v4.0-pro", "fast": "rerank-v4.0-fast"}}
    return data
