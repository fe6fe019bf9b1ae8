"""The state Redis must not evict: `maxmemory-policy allkeys-lru` is detected at start
(refused, or warned about when configured), the score cache may live on an evicting Redis
of its own, and a refused start is one clear log line and exit 1, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
import yaml

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.runtime import RUNTIME, reload
from gateway.state.redis_policy import StartupRefused
from tests.conftest import REDIS_URL, TEAM_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.keys import BODY, call, replicas_config, rerank
from tests.support.paths import ROOT
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop, free_port


def evicting(server: OwnRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("maxmemory", "64mb")
    client.close()


def config_on(upstream: str, state_url: str, **sections: Any) -> dict[str, Any]:
    data = replicas_config(upstream, "rg-policy:")
    data["state"] = {"redis_url": state_url, **sections.pop("state", {})}
    data["limits"] = {"limits_backend": "memory"}  # nothing left behind in the shared Redis
    data.update(sections)
    return data


def test_an_evicting_state_redis_is_refused_at_start(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], own_redis: OwnRedis
) -> None:
    evicting(own_redis)
    app = build_app(parse_config(config_on(fake_cohere[1], own_redis.url), {}))
    with pytest.raises(StartupRefused) as refused:
        servers.serve(app)
    message = str(refused.value)
    assert message.startswith(
        f"the state Redis (redis://127.0.0.1:{own_redis.port}/0) has maxmemory-policy "
        "allkeys-lru (maxmemory 64.00M): it may evict API keys"
    )
    assert "Set `maxmemory-policy noeviction`" in message and "cache.redis_url" in message


async def test_warn_starts_anyway_and_says_so(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], own_redis: OwnRedis
) -> None:
    evicting(own_redis)
    data = config_on(fake_cohere[1], own_redis.url, state={"on_evicting_redis": "warn"})
    with structlog.testing.capture_logs() as logs:
        url = servers.serve(build_app(parse_config(data, {})))
    (warning,) = [e for e in logs if e["event"] == "redis_may_evict"]
    assert warning["log_level"] == "warning" and warning["policy"] == "allkeys-lru"
    assert (await rerank(url, TEAM_KEY, BODY))[0] == 200


async def test_the_cache_may_live_on_an_evicting_redis_of_its_own(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], own_redis: OwnRedis
) -> None:
    evicting(own_redis)
    data = config_on(
        fake_cohere[1],
        REDIS_URL,  # the shared test Redis: noeviction
        cache={"backend": "redis", "redis_url": own_redis.url, "key_prefix": "rg-own-cache:"},
    )
    url = servers.serve(build_app(parse_config(data, {})))
    body = {**BODY, "model": "rerank-v3.5"}
    assert (await rerank(url, TEAM_KEY, body))[0] == 200
    cached = redis.Redis.from_url(own_redis.url)
    assert list(cached.scan_iter(match="rg-own-cache:*"))  # the scores went to the cache Redis
    cached.close()


def test_a_refused_start_is_one_log_line_and_exit_1(
    fake_cohere: tuple[FakeCohere, str], own_redis: OwnRedis, tmp_path: Path
) -> None:
    evicting(own_redis)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config_on(fake_cohere[1], own_redis.url)))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert '"event":"startup_refused"' in out.stdout and "allkeys-lru" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


async def test_a_reload_keeps_api_keys_and_refuses_an_evicting_redis(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], own_redis: OwnRedis
) -> None:
    config = parse_config(config_on(fake_cohere[1], own_redis.url), {})
    app = build_app(config)
    url = servers.serve(app)
    _, issued = await call("POST", url + "/admin/keys", body={"team": "search"})
    servers.run(reload(app, config))  # what SIGHUP does: a fresh gateway, keys reloaded
    assert (await rerank(url, issued["key"], BODY))[0] == 200
    serving = app[RUNTIME].gateway
    evicting(own_redis)
    with pytest.raises(StartupRefused):
        servers.run(reload(app, config))
    assert app[RUNTIME].gateway is serving  # the old config keeps serving
    assert (await rerank(url, issued["key"], BODY))[0] == 200
