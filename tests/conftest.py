"""Shared fixtures: a background server loop, the fake Cohere upstream, gateways built
from config mappings, and real Redis (which must be running: tests fail loudly if not)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.auth import hash_key
from tests.fakes.cohere import FakeCohere
from tests.support.postgres import SHARED_DSN, OwnPostgres, check_shared, drop_schema, new_schema
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop

# The unit tests: plain objects, or a gateway in this process at most (no `serve`
# process, no waiting on a clock); `make test-fast` runs them alone (`pytest -m unit`).
UNIT = (
    "policies/",
    "gateway/config/",
    "gateway/chain/test_cache.py",
    "gateway/chain/test_order.py",
    "gateway/http/test_edge_aiohttp.py",
    "gateway/http/test_openapi.py",
    "gateway/http/test_wire.py",
    "gateway/observe/test_logs.py",
    "gateway/state/test_facts_listwise.py",
    "providers/test_credentials.py",
    "providers/test_http1.py",
    "providers/test_local.py",
    "providers/test_oauth.py",
    "providers/test_request_fields.py",
)
_TESTS = Path(__file__).parent
_gone = [path for path in UNIT if not (_TESTS / path).exists()]
assert not _gone, f"tests/conftest.py UNIT names what is not there: {_gone}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(_TESTS).as_posix().startswith(UNIT):
            item.add_marker(pytest.mark.unit)


TEAM_KEY = "team-search-key"
OTHER_TEAM_KEY = "team-ads-key"
ADMIN_KEY = "admin-key"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def servers() -> Iterator[ServerLoop]:
    loop = ServerLoop()
    yield loop
    loop.close()


@pytest.fixture
def fake_cohere(servers: ServerLoop) -> tuple[FakeCohere, str]:
    fake = FakeCohere()
    return fake, servers.serve(fake.app())


def teams_config(
    providers: dict[str, Any], models: dict[str, Any], **sections: Any
) -> dict[str, Any]:
    """A keyed config: the admin key, teams `search` (TEAM_KEY) and `ads` (OTHER_TEAM_KEY),
    the given providers and models, and any other sections."""
    return {
        "auth": {"mode": "keys", "admin_key_sha256": hash_key(ADMIN_KEY)},
        "teams": {
            "search": {"key_sha256": [hash_key(TEAM_KEY)]},
            "ads": {"key_sha256": [hash_key(OTHER_TEAM_KEY)]},
        },
        "providers": providers,
        "models": models,
        **sections,
    }


def gateway_config(upstream_urls: dict[str, str], **sections: Any) -> dict[str, Any]:
    """A keyed config whose model `rerank-v3.5` is served by the given Cohere-compatible
    upstreams (name -> base URL), in priority order, plus the offline `local-bm25`."""
    providers: dict[str, Any] = {
        name: {"type": "cohere", "base_url": url, "api_key": "upstream-key", "timeout_s": 5}
        for name, url in upstream_urls.items()
    }
    providers["offline"] = {"type": "local"}
    models = {
        "rerank-v3.5": {
            "deployments": [
                {"provider": name, "model": "rerank-v3.5", "priority": i}
                for i, name in enumerate(upstream_urls)
            ]
        },
        "local-bm25": {"deployments": [{"provider": "offline"}]},
    }
    return teams_config(providers, models, **sections)


@pytest.fixture
def start_gateway(servers: ServerLoop) -> Callable[[dict[str, Any]], str]:
    """Build a gateway from a config mapping, serve it, return its base URL."""

    def start(data: dict[str, Any]) -> str:
        config = parse_config(data, {})
        return servers.serve(build_app(config))

    return start


@pytest.fixture
def gateway_url(fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]) -> str:
    return start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # fail loudly: the suite needs real Redis
        pytest.fail(
            f"Redis must be running at {REDIS_URL} for these tests ({exc}); run `make test`"
        )
    yield client
    client.close()


def scratch_prefix(redis_client: redis.Redis, label: str) -> Iterator[str]:
    """A key prefix of one test's own in the shared Redis; its keys are deleted afterwards,
    nothing else is."""
    prefix = f"{label}{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


def spend_in_redis(client: redis.Redis, prefix: str, team: str, period: str) -> int | None:
    """A team's budget counter for `period` (YYYY-MM-DD or YYYY-MM), micro-dollars; None
    when Redis holds none."""
    found = client.hget(f"{prefix}{{{team}}}:spend:{period}", "m")
    return None if found is None else int(found)


@pytest.fixture
def cache_prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test:")


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix for the limits and usage stores of one test (see `scratch_prefix`)."""
    yield from scratch_prefix(redis_client, "rg-test-")


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of this test's own, on a free port, that the test may stop."""
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ledger_schema() -> Iterator[str]:
    """A schema of this test's own on the shared PostgreSQL (dropped afterwards)."""
    check_shared()
    schema = new_schema()
    yield schema
    drop_schema(SHARED_DSN, schema)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL server of this test's own, on a free port, that the test may stop."""
    server = OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
