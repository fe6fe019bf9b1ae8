"""Key lifetimes are bounded: a rotated key keeps its expiry; a key made by an expiring
manage key does not outlive it unless the admin says so; expiries and grace periods are
at most ten years away (400 naming the field); and a record that cannot be read (such as
one an earlier version wrote with an expiry of 1e308) is skipped and flagged, never a
crash of the gateway, the listing or `rerank-gateway keys list`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml

from policies.access.api_keys import MAX_LIFETIME_S, digest_of
from tests.fakes.clock import FakeClock
from tests.support.keys import Replicas, call, cli, rerank

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def url(keyed_replicas: Callable[..., Replicas], clock: FakeClock) -> str:
    """One replica, on the fake clock."""
    (only,) = keyed_replicas(count=1, wall_clock=clock).urls
    return str(only)


async def manage_key(url: str, expires_in_s: float) -> dict[str, Any]:
    """A manage-scope API key of team search that expires."""
    body = {"team": "search", "scopes": ["manage"], "expires_in_s": expires_in_s}
    status, issued = await call("POST", url + "/admin/keys", body=body)
    assert status == 201
    return dict(issued)


async def test_a_rotated_key_keeps_its_expiry_unless_the_admin_changes_it(
    url: str, clock: FakeClock
) -> None:
    manager = await manage_key(url, 60)
    # The manage key rotates itself: the new key expires when the old one would have.
    status, rotated = await call(
        "POST", url + f"/admin/keys/{manager['id']}/rotate", manager["key"], {"grace_s": 0}
    )
    assert status == 201 and rotated["expires"] == NOW + 60
    status, again = await call("POST", url + f"/admin/keys/{rotated['id']}/rotate", rotated["key"])
    assert status == 201 and again["expires"] == NOW + 60
    for body, expected in (
        ({"never_expires": True}, 403),  # only the admin may lift the expiry
        ({"expires_in_s": 3600}, 400),  # nor may a manager move it later
    ):
        status, answer = await call(
            "POST", url + f"/admin/keys/{again['id']}/rotate", again["key"], body
        )
        assert status == expected, answer
    status, shorter = await call(
        "POST", url + f"/admin/keys/{again['id']}/rotate", again["key"], {"expires_in_s": 30}
    )
    assert status == 201 and shorter["expires"] == NOW + 30
    # The admin says so: the new key may live longer, or never expire.
    status, longer = await call(
        "POST", url + f"/admin/keys/{shorter['id']}/rotate", body={"expires_in_s": 86_400}
    )
    assert status == 201 and longer["expires"] == NOW + 86_400
    status, forever = await call(
        "POST", url + f"/admin/keys/{longer['id']}/rotate", body={"never_expires": True}
    )
    assert status == 201 and forever["expires"] is None
    clock.advance(61)
    assert (await rerank(url, again["key"]))[0] == 401
    assert (await rerank(url, forever["key"]))[0] == 403  # alive; manage scope only


async def test_a_key_made_by_an_expiring_manage_key_expires_with_it(
    url: str, clock: FakeClock
) -> None:
    manager = await manage_key(url, 600)
    status, child = await call("POST", url + "/admin/keys", manager["key"], {"name": "svc"})
    assert status == 201 and child["expires"] == NOW + 600
    assert child["warnings"] == [
        f"the key expires at 2027-01-15T08:10:00Z, with the manage key that created it (API key "
        f"{manager['id']}); only an admin can issue a key that outlives it"
    ]
    status, refused = await call("POST", url + "/admin/keys", manager["key"], {"expires_in_s": 601})
    assert status == 400 and refused["message"] == (
        f"invalid request: the key would outlive the manage key creating it (API key "
        f"{manager['id']}, which expires at 2027-01-15T08:10:00Z); give an expiry no later "
        "than that, or ask an admin for a longer-lived key"
    )
    status, sooner = await call("POST", url + "/admin/keys", manager["key"], {"expires_in_s": 60})
    assert status == 201 and sooner["expires"] == NOW + 60 and sooner["warnings"] == []
    # Rotating a key the admin made never-expiring: the manager's key still bounds it.
    _, admins = await call("POST", url + "/admin/keys", body={"team": "search"})
    status, rotated = await call("POST", url + f"/admin/keys/{admins['id']}/rotate", manager["key"])
    assert status == 201 and rotated["expires"] == NOW + 600
    status, by_admin = await call("POST", url + "/admin/keys", body={"team": "search"})
    assert status == 201 and by_admin["expires"] is None  # the admin's keys need not expire
    clock.advance(600)
    assert [(await rerank(url, k["key"]))[0] for k in (child, rotated, by_admin)] == [401, 401, 200]


async def test_expiries_and_grace_periods_are_at_most_ten_years_away(url: str) -> None:
    limit = f"at most {MAX_LIFETIME_S} seconds (10 years) from now"
    for body, field in (
        ({"expires_in_s": 1e308}, "expires_in_s"),
        ({"expires_in_s": MAX_LIFETIME_S + 1}, "expires_in_s"),
        ({"expires_at": "9999-12-31T23:59:59Z"}, "expires_at"),
        ({"expires_at": "2037-01-16T00:00:00Z"}, "expires_at"),
    ):
        status, answer = await call("POST", url + "/admin/keys", body={"team": "search", **body})
        assert status == 400, answer
        assert answer["message"].startswith(f"invalid request: {field} must be {limit}")
    status, longest = await call(
        "POST", url + "/admin/keys", body={"team": "search", "expires_in_s": MAX_LIFETIME_S}
    )
    assert status == 201 and longest["expires"] == NOW + MAX_LIFETIME_S
    status, answer = await call(
        "POST", url + f"/admin/keys/{longest['id']}/rotate", body={"grace_s": 1e308}
    )
    assert status == 400 and "grace_s must be 0 to 315360000 seconds" in answer["message"]
    status, listing = await call("GET", url + "/admin/keys")
    assert status == 200 and [k["id"] for k in listing["keys"]] == [longest["id"]]


async def test_an_unreadable_record_is_skipped_and_flagged_never_a_crash(
    keyed_replicas: Callable[..., Replicas],
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    (url,) = keyed_replicas(count=1).urls
    _, good = await call("POST", url + "/admin/keys", body={"team": "search", "name": "good"})
    # What an earlier version let a manager write, and what a hand edit can leave behind.
    records = f"{key_prefix}{{api_keys}}:records"
    huge = orjson.loads(redis_client.hget(records, good["id"]) or b"{}")
    huge.update(id="feedc0ffee00", digest=digest_of("some key"), expires=1e308)
    redis_client.hset(records, "feedc0ffee00", orjson.dumps(huge))
    redis_client.hset(records, "0badbadbad00", b"{not json")
    redis_client.incr(f"{key_prefix}{{api_keys}}:version")

    # A gateway starting now serves the good key and not the bad ones.
    started = keyed_replicas(count=1)
    (other,) = started.urls
    assert (await rerank(other, good["key"]))[0] == 200
    assert (await rerank(other, "some key"))[0] == 401
    status, listing = await call("GET", other + "/admin/keys")
    assert status == 200 and [k["id"] for k in listing["keys"]] == [good["id"]]
    assert listing["unreadable"] == [
        {"id": "0badbadbad00", "problem": "not JSON"},
        {
            "id": "feedc0ffee00",
            "problem": "expires is out of range (1e+308; the latest is 9999-12-31)",
        },
    ]

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(started.data))
    out = cli("list", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert good["id"] in out.stdout and "Traceback" not in out.stderr
    assert (
        "warning: key record 'feedc0ffee00' is unreadable (expires is out of range (1e+308; the "
        "latest is 9999-12-31)); no gateway honours it: revoke it with "
        "`rerank-gateway keys revoke ID`"
    ) in out.stderr
    # The admin revokes them (no manager may: whose they are, no one can tell).
    status, revoked = await call("DELETE", other + "/admin/keys/feedc0ffee00")
    assert (status, revoked) == (200, {"id": "feedc0ffee00", "team": None, "revoked": True})
    out = cli("revoke", "0badbadbad00", "--config", str(path))
    assert out.returncode == 0 and out.stdout.strip() == "revoked 0badbadbad00 (team unknown)"
    assert (await call("GET", other + "/admin/keys"))[1]["unreadable"] == []
