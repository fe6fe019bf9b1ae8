"""The in-process key snapshot on its own: lookups, expiry, last use noted per minute."""

from __future__ import annotations

import pytest

from policies.access.api_keys import (
    KEY_PREFIX,
    MANAGE,
    RERANK,
    KeyDirectory,
    KeyRecord,
    check_scopes,
    digest_of,
    new_api_key,
)


def record(key: str, key_id: str = "a1", **fields: object) -> KeyRecord:
    return KeyRecord(id=key_id, team="search", digest=digest_of(key), created=0.0, **fields)  # type: ignore[arg-type]


def test_a_new_key_carries_its_public_id_and_a_long_secret() -> None:
    key_id, key = new_api_key()
    assert key.startswith(f"{KEY_PREFIX}{key_id}_")
    secret = key.removeprefix(f"{KEY_PREFIX}{key_id}_")
    assert len(secret) >= 43 and len({new_api_key()[1] for _ in range(50)}) == 50


def test_records_round_trip_through_json_without_the_key() -> None:
    key_id, key = new_api_key()
    original = record(key, key_id, name="ci", expires=100.0, scopes=(RERANK, MANAGE), models=("m",))
    raw = original.to_json()
    assert key.encode() not in raw and original.digest.encode() in raw
    assert KeyRecord.from_json(raw) == original
    assert not original.expired(99.9) and original.expired(100.0)


def test_use_is_noted_once_per_minute_and_taken_once() -> None:
    directory = KeyDirectory()
    rec = record("k1")
    directory.replace_all([rec], "1")
    assert directory.find(digest_of("k1")) == rec and directory.find(digest_of("k2")) is None
    for now in (120.0, 130.5, 179.9):
        directory.note_use(rec, now)
    assert directory.take_used() == {"a1": 120.0}
    assert directory.take_used() == {}
    directory.note_use(rec, 180.0)  # a new minute
    assert directory.take_used() == {"a1": 180.0}


def test_put_and_drop_apply_a_local_change_at_once() -> None:
    directory = KeyDirectory()
    directory.put(record("k1"))
    directory.put(record("k2", "b2"))
    directory.drop("a1")
    assert directory.by_id("a1") is None and directory.find(digest_of("k2")) is not None
    assert directory.teams() == {"search"}


def test_scopes_are_checked() -> None:
    assert check_scopes([MANAGE, RERANK, MANAGE]) == (MANAGE, RERANK)
    with pytest.raises(ValueError, match="unknown scope 'admin'"):
        check_scopes(["admin"])
    with pytest.raises(ValueError, match="at least one scope"):
        check_scopes([])
