"""Key churn stays cheap and bounded: a replica catches up by reading only the records that
changed (the change log), loads everything only when the log cannot say; a team has at
most `auth.api_keys_per_team` live keys; its managers create at most
`auth.api_key_creations_per_minute` keys a minute (the admin is not limited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis

from policies.access.api_keys import KeyRecord, digest_of, new_api_key
from policies.access.redis_keys import MOST_CHANGES, RedisKeyStore
from tests.conftest import ADMIN_KEY, REDIS_URL
from tests.fakes.clock import FakeClock
from tests.support.keys import MANAGER_KEY, Replicas, call, rerank


async def create(url: str, key: str = ADMIN_KEY, **body: Any) -> tuple[int, Any, str | None]:
    """POST /admin/keys: status, answer and Retry-After."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/admin/keys", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_a_replica_reads_only_the_keys_that_changed(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    pair = keyed_replicas()
    a, b = pair.urls
    first = [(await create(a, team="search"))[1] for _ in range(5)]
    pair.wait_all()
    directory = pair.keeper(1).directory
    before = {k["id"]: directory.by_id(k["id"]) for k in first}
    _, added, _ = await create(a, team="ads")
    assert (await call("DELETE", a + f"/admin/keys/{first[0]['id']}"))[0] == 200
    pair.wait_all()
    assert directory.by_id(added["id"]) is not None and directory.by_id(first[0]["id"]) is None
    assert (await rerank(b, added["key"]))[0] == 200
    assert (await rerank(b, first[0]["key"]))[0] == 401
    # The records that did not change are the very objects read before: not read again.
    unchanged = [i for i in before if i != first[0]["id"]]
    assert all(directory.by_id(i) is before[i] for i in unchanged)


async def test_a_replica_that_missed_changes_catches_up_from_the_log_or_loads_all(
    keyed_replicas: Callable[..., Replicas], key_prefix: str, redis_client: redis.Redis
) -> None:
    pair = keyed_replicas()
    a, _ = pair.urls
    keeper = pair.keeper(1)
    _, kept, _ = await create(a, team="search")
    pair.wait_all()
    pair.servers.run(keeper.close())  # B hears no more messages and polls no more
    record = keeper.directory.by_id(kept["id"])
    issued = [(await create(a, team="search"))[1] for _ in range(3)]
    await call("DELETE", a + f"/admin/keys/{issued[0]['id']}")
    assert pair.servers.run(keeper.refresh()) is True
    assert keeper.directory.version == int(pair.version())
    assert {k["id"] for k in issued[1:]} | {kept["id"]} == {
        r.id for r in keeper.directory.by_digest.values()
    }
    assert keeper.directory.by_id(kept["id"]) is record  # from the log: only what changed
    assert pair.servers.run(keeper.refresh()) is False  # nothing new: nothing read

    # The log no longer reaches back (trimmed here; or a writer that keeps no log):
    await create(a, team="search")
    redis_client.xtrim(f"{key_prefix}{{api_keys}}:log", maxlen=0)
    assert pair.servers.run(keeper.refresh()) is True
    reloaded = keeper.directory.by_id(kept["id"])
    assert reloaded == record and reloaded is not record  # everything was read again
    assert len(keeper.directory) == 4


async def test_the_change_log_names_each_change_and_knows_its_limits(key_prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    store = RedisKeyStore(client, key_prefix)
    try:
        records = [_record("search"), _record("search"), _record("ads")]
        start = (await store.load()).version
        for record in records:
            await store.save(record)
        await store.delete(records[0].id, "search")
        delta = await store.changes(start)
        assert delta is not None and delta.version == start + 4
        assert delta.changes == {
            records[0].id: None,
            records[1].id: records[1],
            records[2].id: records[2],
        }
        assert (await store.changes(delta.version)) == type(delta)(delta.version, {}, {})
        # Further behind than MOST_CHANGES, or a version the log does not hold: load all.
        assert await store.changes(delta.version - MOST_CHANGES - 1) is None
        await client.incr(store.version_key)  # a change written without the log
        assert await store.changes(delta.version) is None
        await store.save(_record("ads"))  # later changes cannot hide the gap
        assert await store.changes(delta.version) is None
    finally:
        await client.aclose()


def _record(team: str) -> KeyRecord:
    key_id, key = new_api_key()
    return KeyRecord(id=key_id, team=team, digest=digest_of(key), created=1.0)


async def test_a_team_has_at_most_api_keys_per_team_live_keys(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    clock = FakeClock(1_800_000_000.0)
    a, b = keyed_replicas(wall_clock=clock, auth={"api_keys_per_team": 3}).urls
    assert (await create(a, team="search", expires_in_s=60))[0] == 201
    _, second, _ = await create(b, team="search")
    _, third, _ = await create(a, team="search")
    status, refused, _ = await create(b, team="search")
    assert status == 409 and refused["message"] == (
        "team 'search' has 3 live API keys, the most it may have (auth.api_keys_per_team: 3); "
        "revoke keys it no longer uses (GET /admin/keys?team=search, then DELETE "
        "/admin/keys/<id>) or ask the operators to raise auth.api_keys_per_team"
    )
    assert (await create(a, team="ads"))[0] == 201  # other teams have their own
    # A rotation replaces a key: allowed at the cap (the old key's grace ends at once here).
    status, rotated = await call(
        "POST", a + f"/admin/keys/{second['id']}/rotate", body={"grace_s": 0}
    )
    assert status == 201
    assert (await create(b, team="search"))[0] == 409
    clock.advance(61)  # the first key expired: it no longer counts
    assert (await create(b, team="search"))[0] == 201
    assert (await create(a, team="search"))[0] == 409
    assert (await call("DELETE", a + f"/admin/keys/{third['id']}"))[0] == 200
    assert (await create(a, team="search"))[0] == 201
    assert (await rerank(b, rotated["key"]))[0] == 200


async def test_a_teams_managers_create_a_bounded_number_of_keys_per_minute(
    keyed_replicas: Callable[..., Replicas],
) -> None:
    auth = {"api_key_creations_per_minute": 2}
    a, b = keyed_replicas(manager=True, auth=auth).urls
    _, own, _ = await create(a, MANAGER_KEY)
    assert own["team"] == "search"
    assert (await create(b, MANAGER_KEY))[0] == 201
    status, refused, retry_after = await create(b, MANAGER_KEY)  # across replicas: one limit
    assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 30
    assert refused["message"].startswith(
        "team 'search' may create at most 2 API keys per minute "
        "(auth.api_key_creations_per_minute); retry in "
    )
    status, _ = await call("POST", a + f"/admin/keys/{own['id']}/rotate", MANAGER_KEY)
    assert status == 429  # a rotation creates a key too
    assert (await create(a, team="search"))[0] == 201  # the admin is not limited
    listing = (await call("GET", a + "/admin/keys?team=search"))[1]["keys"]
    assert len(listing) == 3
