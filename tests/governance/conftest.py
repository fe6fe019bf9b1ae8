"""Fixtures for the cost-governance tests: a unique Redis key prefix per test (its keys
are deleted afterwards, nothing else is) and a private redis-server a test may kill.
Helpers (fake clock, HTTP calls) are in tests/governance/helpers.py."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.servers import free_port


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"rg-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@dataclass
class OwnRedis:
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of this test's own, on a free port, that the test may stop."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.02)
    client.close()
    server = OwnRedis(f"redis://127.0.0.1:{port}/0", proc)
    yield server
    server.stop()
