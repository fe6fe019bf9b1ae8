"""The session and attempt-limit policies on their own (no HTTP, a fake clock): when a
session ends, what a store keeps, and how a throttle counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.access.sessions import (
    FileSessionStore,
    MemorySessionStore,
    Session,
    Sessions,
    SessionSettings,
    digest_of,
)
from policies.access.throttle import MemoryThrottle
from tests.fakes.clock import FakeClock

SETTINGS = SessionSettings(max_age_s=3600, idle_s=600)


async def test_a_session_ends_idle_at_its_age_at_sign_out_and_with_another_admin_key() -> None:
    clock = FakeClock(1_000.0)
    store = MemorySessionStore()
    sessions = Sessions(store, SETTINGS, clock)
    token = await sessions.open("admin-a")
    assert list(await store.all()) == [digest_of(token)]  # the digest, never the token
    assert await sessions.check(token, "admin-a")
    assert not await sessions.check(token, "admin-b")  # another admin key: ended, deleted
    assert await store.all() == {}

    token = await sessions.open("admin-a")
    clock.advance(599)
    assert await sessions.check(token, "admin-a")  # use is noted (once a minute)
    clock.advance(599)
    assert await sessions.check(token, "admin-a")
    clock.advance(601)
    assert not await sessions.check(token, "admin-a")  # idle for more than 600 s

    busy = await sessions.open("admin-a")
    for _ in range(6):
        clock.advance(590)
        assert await sessions.check(busy, "admin-a")
    clock.advance(60)  # 3,600 s after sign-in
    assert not await sessions.check(busy, "admin-a")

    token = await sessions.open("admin-a")
    await sessions.close(token)
    assert not await sessions.check(token, "admin-a")
    assert not await sessions.check("never-issued", "admin-a")


async def test_sweeping_drops_ended_sessions_and_bounds_how_many_live() -> None:
    clock = FakeClock(1_000.0)
    store = MemorySessionStore()
    sessions = Sessions(store, SETTINGS, clock, most=3)
    old = await sessions.open("admin-a")
    clock.advance(1)
    others = [await sessions.open("admin-a") for _ in range(2)]
    await store.put("f" * 64, Session("admin-b", clock(), clock()))  # another admin key's
    newest = await sessions.open("admin-a")  # room for it: the oldest goes
    assert not await sessions.check(old, "admin-a")
    assert all([await sessions.check(t, "admin-a") for t in [*others, newest]])
    assert len(await store.all()) == 3
    clock.advance(700)
    assert await sessions.sweep("admin-a") == 3 and await store.all() == {}


async def test_workers_share_sessions_through_files_and_a_sign_out_is_not_undone(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000.0)
    one = Sessions(FileSessionStore(tmp_path / "s"), SETTINGS, clock)
    two = Sessions(FileSessionStore(tmp_path / "s"), SETTINGS, clock)
    token = await one.open("admin-a")
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    assert [p.name for p in (tmp_path / "s").iterdir()] == [digest_of(token)]
    clock.advance(120)
    assert await two.check(token, "admin-a")
    await one.close(token)
    assert not await two.check(token, "admin-a")
    stale = Session("admin-a", clock(), clock())
    await two.store.touch(digest_of(token), stale)  # a late note of use: nothing to update
    assert await one.store.all() == {}
    with pytest.raises(ValueError):
        await one.store.put("../escape", stale)


async def test_a_throttle_counts_attempts_per_key_and_refills_at_its_rate() -> None:
    clock = FakeClock(0.0)
    throttle = MemoryThrottle("sign_in", per_minute=3, clock=clock)
    assert [await throttle.take("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await throttle.wait("10.0.0.1") == pytest.approx(20.0)
    assert await throttle.take("10.0.0.1") == pytest.approx(20.0)  # refused: not counted
    assert await throttle.take("10.0.0.2") == 0.0  # each key its own
    clock.advance(20)
    assert await throttle.wait("10.0.0.1") == 0.0  # wait() counts nothing
    assert await throttle.take("10.0.0.1") == 0.0
    assert await throttle.take("10.0.0.1") > 0


async def test_a_memory_throttle_forgets_idle_keys_first() -> None:
    clock = FakeClock(0.0)
    throttle = MemoryThrottle("sign_in", per_minute=1, clock=clock, most_keys=2)
    await throttle.take("a")
    clock.advance(60)  # a's bucket is full again
    await throttle.take("b")
    await throttle.take("c")  # over the bound: a goes (idle), b and c stay
    assert await throttle.wait("b") > 0 and await throttle.wait("c") > 0
    await throttle.take("d")  # none idle: the least recently used (b) goes
    assert await throttle.wait("b") == 0.0 and await throttle.wait("c") > 0
