"""Fixtures for the API key tests: a Redis key prefix of the test's own (its keys are
deleted afterwards, nothing else is) and a private redis-server a test may reconfigure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import OwnRedis


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"rg-test-keys-{uuid.uuid4().hex[:12]}:"
    yield prefix
    found = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if found:
        redis_client.delete(*found)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()
