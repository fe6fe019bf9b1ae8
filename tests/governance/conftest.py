"""Fixtures for the cost-governance tests: a unique Redis key prefix per test (see
tests/conftest.py, which also has `own_redis`). Helpers (fake clock, HTTP calls) are in
tests/governance/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import scratch_prefix


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test-")
