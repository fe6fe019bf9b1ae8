"""The status page's sign-in is a server-side session, not the admin key in a cookie:
the cookie holds a random token (HTTP-only, SameSite=Strict, Secure unless plain HTTP on
loopback); a session made on one replica works on the other and signing out on one ends
it on both; sessions expire (idle and absolute) and end when the admin key changes;
failed sign-ins are limited per address and in all (429 with Retry-After), counted and
logged without the key; `Authorization: Bearer <admin key>` still works for scripts;
with several workers and no Redis, every worker honours and ends a session."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis
import structlog
import yaml

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http import status
from gateway.http.auth import hash_key
from gateway.http.runtime import RUNTIME, reload
from gateway.http.status import is_loopback_address
from tests.conftest import ADMIN_KEY, REDIS_URL, TEAM_KEY, gateway_config, scratch_prefix
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import FakeCohere
from tests.support.keys import Replicas, replicas_config, start_replicas
from tests.support.processes import GatewayProcess
from tests.support.servers import ServerLoop, free_port
from tests.support.status import page, sign_in, sign_out, signed_in, token_of

NOW = 1_800_000_000.0


@pytest.fixture
def session_prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test-sessions-")


@pytest.fixture
def replicas(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    session_prefix: str,
    redis_client: redis.Redis,
) -> Callable[..., Replicas]:
    """Replicas sharing Redis under the test's prefix: `replicas(count, clock, **auth)`."""

    def start(count: int = 2, clock: FakeClock | None = None, **auth: Any) -> Replicas:
        data = replicas_config(fake_cohere[1], session_prefix)
        data["auth"].update(auth)
        return start_replicas(servers, data, session_prefix, redis_client, count, clock)

    return start


async def test_the_cookie_is_a_random_session_token_with_safe_attributes(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str]
) -> None:
    url = servers.serve(build_app(parse_config(gateway_config({"a": fake_cohere[1]}), {})))
    code, headers, _ = await sign_in(url)
    assert code == 303 and headers["Location"] == "/admin/status"
    cookie = SimpleCookie(headers["Set-Cookie"])[status.COOKIE]
    token = cookie.value
    assert ADMIN_KEY not in headers["Set-Cookie"] and hash_key(ADMIN_KEY) not in token
    assert len(token) >= 43 and token != token_of((await sign_in(url))[1])  # fresh each time
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/admin/" and not cookie["max-age"] and not cookie["expires"]
    assert not cookie["secure"]  # plain HTTP on loopback: a browser would drop a Secure one
    code, headers, _ = await sign_in(url, **{"X-Forwarded-Proto": "https"})
    assert SimpleCookie(headers["Set-Cookie"])[status.COOKIE]["secure"] is True
    assert signed_in(await page(url, token))
    # The old cookie, the admin key itself, no longer signs anyone in.
    async with (
        aiohttp.ClientSession() as client,
        client.get(url + "/admin/status", headers={"Cookie": f"rg_admin={ADMIN_KEY}"}) as resp,
    ):
        assert not signed_in(await resp.text())
    # Scripts: the admin key as a bearer token, as before.
    answer = httpx.get(url + "/admin/status.json", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200 and "deployments" in answer.json()
    assert await sign_out(url, token) == 303
    assert not signed_in(await page(url, token))


def test_secure_is_left_out_only_for_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert is_loopback_address(host), host
    for host in ("10.0.0.5", "192.168.1.2", "::", "0.0.0.0", "fe80::1", "example.com"):
        assert not is_loopback_address(host), host


async def test_a_session_works_on_every_replica_and_signing_out_ends_it_everywhere(
    replicas: Callable[..., Replicas], session_prefix: str, redis_client: redis.Redis
) -> None:
    a, b = replicas().urls
    _, headers, _ = await sign_in(a)
    token = token_of(headers)
    assert signed_in(await page(b, token)) and signed_in(await page(a, token))
    stored = redis_client.hgetall(f"{session_prefix}{{admin_sessions}}")
    assert list(stored) == [hash_key(token).encode()]  # only the token's digest is kept
    assert ADMIN_KEY.encode() not in b"".join(stored.values())
    assert await sign_out(b, token) == 303
    assert not signed_in(await page(a, token)) and not signed_in(await page(b, token))
    assert redis_client.hgetall(f"{session_prefix}{{admin_sessions}}") == {}


async def test_sessions_expire_when_idle_and_at_their_maximum_age(
    replicas: Callable[..., Replicas],
) -> None:
    clock = FakeClock(NOW)
    (url,) = replicas(1, clock, session_max_age_s=4 * 3600, session_idle_s=1800).urls
    idle = token_of((await sign_in(url))[1])
    busy = token_of((await sign_in(url))[1])
    for _ in range(7):  # used every 29 minutes: alive after 3 h 23 min
        clock.advance(29 * 60)
        assert signed_in(await page(url, busy))
    assert not signed_in(await page(url, idle))  # unused for more than 30 minutes
    clock.advance(29 * 60)  # 3 h 52 min
    assert signed_in(await page(url, busy))
    clock.advance(8 * 60)  # 4 h: the maximum age, however busy
    assert not signed_in(await page(url, busy))


async def test_changing_the_admin_key_ends_every_session(
    replicas: Callable[..., Replicas], session_prefix: str, redis_client: redis.Redis
) -> None:
    pair = replicas()
    a, b = pair.urls
    data = pair.data
    token = token_of((await sign_in(a))[1])
    kept = parse_config(data, {})  # a reload that leaves the admin key alone keeps it
    pair.servers.run(reload(pair.apps[0], kept))
    assert signed_in(await page(a, token))
    data["auth"]["admin_key_sha256"] = hash_key("new-admin-key")
    pair.servers.run(reload(pair.apps[1], parse_config(data, {})))
    # B runs the new key: the session is refused there and deleted from the store, so A,
    # still on the old config, refuses it too.
    assert not signed_in(await page(b, token)) and not signed_in(await page(a, token))
    assert redis_client.hgetall(f"{session_prefix}{{admin_sessions}}") == {}
    assert signed_in(await page(b, token_of((await sign_in(b, "new-admin-key"))[1])))


async def test_failed_sign_ins_are_limited_counted_and_logged_without_the_key(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str]
) -> None:
    data = gateway_config({"a": fake_cohere[1]})
    data["auth"].update(sign_in_failures_per_minute_per_address=3, sign_in_failures_per_minute=5)
    app = build_app(parse_config(data, {}))
    url = servers.serve(app)
    with structlog.testing.capture_logs() as logs:
        for guess in ("guess-1", "guess-2", TEAM_KEY):
            assert (await sign_in(url, guess))[0] == 401
        code, headers, text = await sign_in(url)  # even the right key: not checked now
        assert code == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert "too many failed sign-ins; wait" in text and "Set-Cookie" not in headers
        # Another address has its own allowance, until the limit of all addresses.
        assert (await sign_in(url, "guess-4", source="127.0.0.2"))[0] == 401
        assert (await sign_in(url, "guess-5", source="127.0.0.3"))[0] == 401
        assert (await sign_in(url, "guess-6", source="127.0.0.4"))[0] == 429
    counts = {s[0]["outcome"]: s[1] for s in app[RUNTIME].metrics.samples("rerank_admin_sign_ins_total")}
    assert counts == {"ok": 0.0, "refused": 5.0, "throttled": 2.0}
    refused = [e for e in logs if e["event"] == "admin_sign_in_refused"]
    assert refused[0]["reason"] == "refused" and refused[0]["address"] == "127.0.0.1"
    assert len(refused) == 1  # once per 30 s, however many: the next line says how many
    logged = repr(logs)
    for key in (ADMIN_KEY, TEAM_KEY, "guess-1", "guess-5"):
        assert key not in logged


async def test_the_sign_in_limit_holds_across_replicas(
    replicas: Callable[..., Replicas],
) -> None:
    a, b = replicas(sign_in_failures_per_minute_per_address=2).urls
    assert (await sign_in(a, "guess-1"))[0] == 401
    assert (await sign_in(b, "guess-2"))[0] == 401
    assert (await sign_in(a, "guess-3"))[0] == 429
    assert (await sign_in(b))[0] == 429


def test_with_several_workers_and_no_redis_every_worker_honours_and_ends_a_session(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config({"a": fake_cohere[1]})))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = GatewayProcess("--config", str(config), "--port", str(port), "--workers", "2")
    try:
        gateway.wait_ready(url)
        token = token_of(servers.run(sign_in(url))[1])
        workers: set[str] = set()
        for _ in range(200):  # each request on a new connection: the kernel picks a worker
            text = servers.run(page(url, token))
            assert signed_in(text)
            found = re.search(r"answered by worker pid (\d+)", text)
            assert found is not None
            workers.add(found.group(1))
            if len(workers) == 2:
                break
        assert len(workers) == 2
        assert servers.run(sign_out(url, token)) == 303
        assert not any(signed_in(servers.run(page(url, token))) for _ in range(40))
    finally:
        assert gateway.stop() == 0
    assert REDIS_URL not in config.read_text()
