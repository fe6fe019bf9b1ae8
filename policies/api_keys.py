"""API keys issued at run time (by the admin API or the CLI), as plain records.

A key is shown once, when it is made; what is kept is its SHA-256 digest and metadata
(`KeyRecord`). The key itself has the form `rgk_<id>_<secret>`: the id part is public
(it names the record, and `rgk_<id>` is the prefix that listings show so people can tell
their keys apart), the secret part is never stored anywhere.

`KeyDirectory` is the in-process snapshot of every record that the hot path reads:
a request with an API key costs one dict lookup, no Redis round trip. It also notes
each key's last use, per minute, for a background task to write out (`take_used`).
The snapshot is refreshed from the shared store by `gateway.state.api_keys`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

RERANK = "rerank"  # may call /v2/rerank and /v1/rerank
MANAGE = "manage"  # may create, rotate and revoke its team's keys and read its usage
SCOPES = (RERANK, MANAGE)
KEY_PREFIX = "rgk_"
_USED_RESOLUTION_S = 60  # last use is recorded per minute


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh (key id, key): the id is public, the rest of the key is secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What is stored about one key: its digest and metadata, never the key."""

    id: str
    team: str
    digest: str
    created: float  # epoch seconds
    name: str | None = None
    expires: float | None = None  # epoch seconds; None: never
    scopes: tuple[str, ...] = (RERANK,)
    models: tuple[str, ...] | None = None  # narrows the team's models; None: the team's
    created_by: str = ""  # who issued it (for the listing; the audit log has the rest)
    rotated_from: str | None = None  # the key this one replaced

    @property
    def prefix(self) -> str:
        return f"{KEY_PREFIX}{self.id}"

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def with_expiry(self, expires: float) -> KeyRecord:
        return replace(self, expires=expires)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> KeyRecord:
        data: dict[str, Any] = orjson.loads(raw)
        data["scopes"] = tuple(data.get("scopes") or (RERANK,))
        if data.get("models") is not None:
            data["models"] = tuple(data["models"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def public(self, last_used: float | None, now: float) -> dict[str, Any]:
        """The metadata a listing shows (no digest: it is no one's business)."""
        return {
            "id": self.id,
            "team": self.team,
            "name": self.name,
            "prefix": self.prefix,
            "created": self.created,
            "expires": self.expires,
            "expired": self.expired(now),
            "last_used": last_used,
            "scopes": list(self.scopes),
            "models": None if self.models is None else list(self.models),
            "created_by": self.created_by,
            "rotated_from": self.rotated_from,
        }


@dataclass
class KeyDirectory:
    """Every API key this process honours, by digest; swapped whole on refresh."""

    by_digest: dict[str, KeyRecord] = field(default_factory=dict)
    version: str | None = None  # the store's version this snapshot was read at
    _used: dict[str, int] = field(default_factory=dict)  # key id -> minute last noted
    _pending: set[str] = field(default_factory=set)  # ids used since the last take

    def replace_all(self, records: Iterable[KeyRecord], version: str | None) -> None:
        self.by_digest = {r.digest: r for r in records}
        self.version = version

    def put(self, record: KeyRecord) -> None:
        """Apply a change made here at once (other replicas learn it on refresh)."""
        self.by_digest = {**self.by_digest, record.digest: record}

    def drop(self, key_id: str) -> None:
        self.by_digest = {d: r for d, r in self.by_digest.items() if r.id != key_id}

    def find(self, digest: str) -> KeyRecord | None:
        return self.by_digest.get(digest)

    def by_id(self, key_id: str) -> KeyRecord | None:
        return next((r for r in self.by_digest.values() if r.id == key_id), None)

    def teams(self) -> set[str]:
        return {r.team for r in self.by_digest.values()}

    def note_use(self, record: KeyRecord, now: float) -> None:
        """Remember a use; only the first in each minute costs more than a compare."""
        minute = int(now) // _USED_RESOLUTION_S
        if self._used.get(record.id) != minute:
            self._used[record.id] = minute
            self._pending.add(record.id)

    def requeue_used(self, key_id: str, when: float) -> None:
        """A use that could not be written out: keep it for the next flush."""
        self._used.setdefault(key_id, int(when) // _USED_RESOLUTION_S)
        self._pending.add(key_id)

    def take_used(self) -> dict[str, float]:
        """Key id -> the start of the minute of its last use, for the uses not yet taken."""
        taken = {i: float(self._used[i] * _USED_RESOLUTION_S) for i in self._pending}
        self._pending = set()
        return taken


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in order; ValueError naming an unknown one."""
    result: list[str] = []
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r} (scopes are: {', '.join(SCOPES)})")
        if scope not in result:
            result.append(scope)
    if not result:
        raise ValueError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(result)

