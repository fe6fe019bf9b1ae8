"""Fixtures of the gateway tests that use API keys: a Redis key prefix of the test's own
and replicas sharing it (see tests/conftest.py, which also has `own_redis`, a private
redis-server a test may reconfigure)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import redis

from tests.conftest import scratch_prefix
from tests.fakes.cohere import FakeCohere
from tests.support.keys import Replicas, replicas_config, start_replicas, with_manager
from tests.support.servers import ServerLoop


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test-keys-")


@pytest.fixture
def keyed_replicas(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
) -> Callable[..., Replicas]:
    """Starts replicas of the keyed config (one Cohere fake, the test's key prefix):
    `keyed_replicas()`, `keyed_replicas(count=1)`, `keyed_replicas(wall_clock=clock)`,
    `keyed_replicas(manager=True)` (MANAGER_KEY manages team search),
    `keyed_replicas(auth={...})` (auth settings on top)."""

    def start(
        count: int = 2,
        wall_clock: Callable[[], float] | None = None,
        manager: bool = False,
        auth: Mapping[str, Any] | None = None,
    ) -> Replicas:
        data = (with_manager if manager else replicas_config)(fake_cohere[1], key_prefix)
        data["auth"].update(auth or {})
        return start_replicas(servers, data, key_prefix, redis_client, count, wall_clock)

    return start
