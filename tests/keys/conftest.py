"""Fixtures for the API key tests: a Redis key prefix of the test's own (see
tests/conftest.py, which also has `own_redis`, a private redis-server a test may
reconfigure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import scratch_prefix


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test-keys-")
