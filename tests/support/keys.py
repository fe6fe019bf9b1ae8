"""Two gateway replicas sharing one real Redis, for the API key tests.

Each replica is a whole app (its own key snapshot, its own refresher task) served on
loopback; they share Redis under a key prefix of the test's own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.auth import hash_key
from gateway.http.runtime import RUNTIME
from gateway.state.api_keys import KeyKeeper
from tests.conftest import ADMIN_KEY, REDIS_URL, gateway_config
from tests.support.paths import ROOT
from tests.support.servers import ServerLoop

REFRESH_S = 2.0  # auth.api_keys_refresh_s of these replicas: the documented bound
MANAGER_KEY = "search-manager-key"
BODY = {"model": "local-bm25", "query": "orbit", "documents": ["rockets reach orbit", "pie"]}


@dataclass
class Replicas:
    servers: ServerLoop
    apps: list[Any]
    urls: list[str]
    prefix: str
    redis: redis.Redis
    data: dict[str, Any]  # the config they serve

    def keeper(self, i: int) -> KeyKeeper:
        keeper = self.apps[i][RUNTIME].gateway.keeper
        assert keeper is not None
        return keeper

    def version(self) -> str:
        raw = self.redis.get(f"{self.prefix}{{api_keys}}:version")
        assert raw is not None
        return raw.decode()

    def wait_all(self, bound_s: float = REFRESH_S + 1.0) -> None:
        """Until every replica has the store's current version: fails past the bound."""
        version = self.version()
        for i in range(len(self.apps)):
            wait = asyncio.wait_for(self.keeper(i).wait_for_version(version), bound_s)
            self.servers.run(wait)


def replicas_config(upstream: str, prefix: str, **teams: dict[str, Any]) -> dict[str, Any]:
    """The config API key replicas share: keys, counters and usage in the state Redis
    under `prefix`, the score cache off; `teams` settings on top."""
    data = gateway_config({"cohere-a": upstream}, cache={"backend": "none"})
    data["state"] = {"redis_url": REDIS_URL}
    data["auth"].update(api_keys_prefix=prefix, api_keys_refresh_s=REFRESH_S)
    # Counters and usage (in Redis by default with state.redis_url) under the test's prefix.
    data["limits"] = {"redis_prefix": prefix}
    for team, settings in teams.items():
        data["teams"].setdefault(team, {}).update(settings)
    return data


def with_manager(upstream: str, prefix: str, **search: Any) -> dict[str, Any]:
    """The keyed config with MANAGER_KEY as a manager key of team search."""
    return replicas_config(
        upstream, prefix, search={"manager_key_sha256": [hash_key(MANAGER_KEY)], **search}
    )


def start_replicas(
    servers: ServerLoop,
    data: dict[str, Any],
    prefix: str,
    redis_client: redis.Redis,
    count: int = 2,
    wall_clock: Callable[[], float] | None = None,
) -> Replicas:
    config = parse_config(data, {})
    extra = {} if wall_clock is None else {"wall_clock": wall_clock}
    apps = [build_app(config, **extra) for _ in range(count)]
    urls = [servers.serve(app) for app in apps]
    return Replicas(servers, apps, urls, prefix, redis_client, data)


async def call(
    method: str, url: str, key: str | None = ADMIN_KEY, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def rerank(url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await call("POST", url + "/v2/rerank", key, body or BODY)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
