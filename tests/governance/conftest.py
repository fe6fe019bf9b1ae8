"""Fixtures for the cost-governance tests: a unique Redis key prefix per test (its keys
are deleted afterwards, nothing else is) and a private redis-server a test may kill.
Helpers (fake clock, HTTP calls) are in tests/governance/helpers.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import OwnRedis


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"rg-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of this test's own, on a free port, that the test may stop."""
    server = OwnRedis()
    server.start()
    yield server
    server.stop()
