"""API keys across two replicas sharing a real Redis: issued on one, honoured by the
other within the refresh bound; revoked, refused by both; rotation's grace period;
expiry; last use; and a known key keeps working while Redis is down (no round trip)."""

from __future__ import annotations

from collections.abc import Callable

import redis
import structlog

from tests.conftest import TEAM_KEY
from tests.fakes.clock import FakeClock
from tests.fakes.cohere import FakeCohere
from tests.support.keys import REFRESH_S, Replicas, call, replicas_config, rerank, start_replicas
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop


async def test_a_key_issued_on_one_replica_works_on_the_other_within_the_bound(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    pair = keyed_replicas()
    a, b = pair.urls
    status, issued = await call("POST", a + "/admin/keys", body={"team": "search", "name": "ci"})
    assert status == 201
    key = issued["key"]
    assert key.startswith(issued["prefix"] + "_") and issued["prefix"] == f"rgk_{issued['id']}"
    assert (issued["team"], issued["name"], issued["scopes"]) == ("search", "ci", ["rerank"])
    assert (await rerank(a, key))[0] == 200  # the issuing replica: at once
    pair.wait_all()  # the other: within api_keys_refresh_s (pub/sub: usually at once)
    status, answer = await rerank(b, key)
    assert status == 200 and answer["results"][0]["index"] == 0
    status, listing = await call("GET", b + "/admin/keys")
    assert status == 200
    (entry,) = listing["keys"]
    assert entry["id"] == issued["id"] and entry["prefix"] == issued["prefix"]
    assert "key" not in entry and "digest" not in entry
    assert entry["created_by"] == "admin" and entry["expires"] is None


async def test_a_revoked_key_is_refused_by_both_replicas(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    pair = keyed_replicas()
    a, b = pair.urls
    _, issued = await call("POST", a + "/admin/keys", body={"team": "search"})
    pair.wait_all()
    assert [(await rerank(url, issued["key"]))[0] for url in (a, b)] == [200, 200]
    status, answer = await call("DELETE", b + f"/admin/keys/{issued['id']}")
    assert (status, answer) == (200, {"id": issued["id"], "team": "search", "revoked": True})
    assert (await rerank(b, issued["key"]))[0] == 401  # the revoking replica: at once
    pair.wait_all()
    for url in (a, b):
        status, refused = await rerank(url, issued["key"])
        assert (status, refused["message"]) == (401, "invalid api token")
    assert (await rerank(a, TEAM_KEY))[0] == 200  # the config's keys are untouched
    status, answer = await call("DELETE", a + f"/admin/keys/{issued['id']}")
    assert status == 404 and "no API key with id" in answer["message"]


async def test_rotation_keeps_the_old_key_for_the_grace_period_then_says_it_expired(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    clock = FakeClock(1_800_000_000.0)
    pair = keyed_replicas(wall_clock=clock)
    a, b = pair.urls
    _, first = await call("POST", a + "/admin/keys", body={"team": "search", "name": "app"})
    status, rotated = await call(
        "POST", b + f"/admin/keys/{first['id']}/rotate", body={"grace_s": 600}
    )
    assert status == 201
    assert rotated["rotated_from"] == first["id"] and rotated["name"] == "app"
    assert rotated["old_key"]["expires"] == clock.now + 600
    pair.wait_all()
    for url in (a, b):  # within the grace period both keys work everywhere
        assert (await rerank(url, first["key"]))[0] == 200
        assert (await rerank(url, rotated["key"]))[0] == 200
    clock.advance(600)
    for url in (a, b):
        status, refused = await rerank(url, first["key"])
        assert status == 401
        assert refused["message"] == (
            f"API key {first['prefix']}... expired at 2027-01-15T08:10:00Z; ask an admin or "
            "your team's manager for a new key"
        )
        assert (await rerank(url, rotated["key"]))[0] == 200
    status, answer = await call("POST", a + f"/admin/keys/{first['id']}/rotate")
    assert status == 409 and "already expired" in answer["message"]
    _, listing = await call("GET", a + "/admin/keys?team=search")
    assert {k["id"]: k["expired"] for k in listing["keys"]} == {
        first["id"]: True,
        rotated["id"]: False,
    }


async def test_a_key_with_an_expiry_gets_401_saying_it_expired(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    clock = FakeClock(1_800_000_000.0)
    pair = keyed_replicas(wall_clock=clock)
    a, b = pair.urls
    _, issued = await call(
        "POST", a + "/admin/keys", body={"team": "ads", "expires_at": "2027-01-15T09:00:00Z"}
    )
    assert issued["expires"] == 1_800_003_600.0
    pair.wait_all()
    assert (await rerank(b, issued["key"]))[0] == 200
    clock.advance(3_599)
    assert (await rerank(b, issued["key"]))[0] == 200
    clock.advance(1)
    status, refused = await rerank(b, issued["key"])
    assert status == 401 and "expired at 2027-01-15T09:00:00Z" in refused["message"]
    for body, message in (
        ({"team": "ads", "expires_in_s": -5}, "expires_in_s must be more than 0"),
        ({"team": "ads", "expires_at": "2020-01-01T00:00:00Z"}, "expires is in the past"),
        ({"team": "ads", "expires_at": "tomorrow"}, "expires_at must be an ISO 8601 time"),
        ({"team": "ads", "expires_at": "2030-01-01T00:00:00"}, "expires_at needs a zone"),
    ):
        status, answer = await call("POST", a + "/admin/keys", body=body)
        assert status == 400 and message in answer["message"], answer


async def test_last_use_is_recorded_per_minute_in_the_background(
    keyed_replicas: Callable[..., Replicas], key_prefix: str, redis_client: redis.Redis
) -> None:
    clock = FakeClock(1_800_000_030.0)
    pair = keyed_replicas(wall_clock=clock)
    a, b = pair.urls
    _, issued = await call("POST", a + "/admin/keys", body={"team": "search"})
    pair.wait_all()
    _, listing = await call("GET", a + "/admin/keys")
    assert listing["keys"][0]["last_used"] is None
    for _ in range(3):
        assert (await rerank(b, issued["key"]))[0] == 200
    pair.servers.run(pair.keeper(1).flush_used())  # what the background task does
    _, listing = await call("GET", a + "/admin/keys")
    assert listing["keys"][0]["last_used"] == 1_800_000_000.0


async def test_a_known_key_keeps_working_while_redis_is_down(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    own_redis: OwnRedis,
    redis_client: redis.Redis,
) -> None:
    data = replicas_config(fake_cohere[1], "rg-keys:")
    data["state"]["redis_url"] = own_redis.url
    pair = start_replicas(servers, data, "rg-keys:", redis.Redis.from_url(own_redis.url), count=1)
    (url,) = pair.urls
    _, issued = await call("POST", url + "/admin/keys", body={"team": "search"})
    own_redis.stop()
    with structlog.testing.capture_logs():
        assert (await rerank(url, issued["key"]))[0] == 200  # no Redis call per request
        status, answer = await call("POST", url + "/admin/keys", body={"team": "search"})
    assert status == 503 and "key store (Redis) is unreachable" in answer["message"]
    own_redis.start()  # so the fixture's stop finds it running


async def test_a_change_without_its_message_is_picked_up_by_polling(
    keyed_replicas: Callable[..., Replicas], key_prefix: str, redis_client: redis.Redis
) -> None:
    """Pub/sub is at most once: a replica that missed the message still converges."""
    pair = keyed_replicas()
    a, b = pair.urls
    _, issued = await call("POST", a + "/admin/keys", body={"team": "search"})
    pair.wait_all()
    # Revoke behind the gateway's back: delete the record, raise the version, publish nothing.
    tag = f"{key_prefix}{{api_keys}}"
    redis_client.hdel(f"{tag}:records", issued["id"])
    redis_client.incr(f"{tag}:version")
    pair.wait_all(bound_s=REFRESH_S + 1.5)
    for url in (a, b):
        assert (await rerank(url, issued["key"]))[0] == 401
