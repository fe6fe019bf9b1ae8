"""API keys issued at run time (by the admin API or the CLI), as plain records.

A key is shown once, when it is made; what is kept is its SHA-256 digest and metadata
(`KeyRecord`). The key itself has the form `rgk_<id>_<secret>`: the id part is public
(it names the record, and `rgk_<id>` is the prefix that listings show so people can tell
their keys apart), the secret part is never stored anywhere.

`KeyDirectory` is the in-process snapshot of every record that the hot path reads:
a request with an API key costs one dict lookup, no Redis round trip. It also notes
each key's last use, per minute, for a background task to write out (`take_used`).
The snapshot is refreshed from the shared store by `gateway.state.api_keys`: whole at
start, then change by change (`apply`), so a change costs every replica the records it
touched, not all of them.

A record is read strictly (`KeyRecord.from_json` raises `BadRecord`): one that a bug, an
old version or a hand edit left malformed is never honoured, and never stops the others
from loading or a listing from being printed.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

RERANK = "rerank"  # may call /v2/rerank and /v1/rerank
MANAGE = "manage"  # may create, rotate and revoke its team's keys and read its usage
SCOPES = (RERANK, MANAGE)
KEY_PREFIX = "rgk_"
_USED_RESOLUTION_S = 60  # last use is recorded per minute
# The longest lifetime a key may be given (and a rotation's grace period): ten years.
MAX_LIFETIME_S = 10 * 365 * 86_400
# Times past this (9999-12-31T23:59:59Z) cannot be shown as dates: such a record is bad.
LATEST_EPOCH = 253_402_300_799.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BadRecord(ValueError):
    """A stored record that cannot be read as a key; the message says why (never its digest)."""


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
        """The record, checked field by field; `BadRecord` saying what is wrong."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRecord("not JSON") from None
        if not isinstance(data, dict):
            raise BadRecord("not a JSON object")
        return cls(
            id=_text(data, "id"),
            team=_text(data, "team"),
            digest=_digest(data),
            created=_time(data, "created"),
            name=_text(data, "name", optional=True),
            expires=_time(data, "expires", optional=True),
            scopes=_scopes(data),
            models=_models(data),
            created_by=_text(data, "created_by", optional=True) or "",
            rotated_from=_text(data, "rotated_from", optional=True),
        )

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
    """Every API key this process honours, by digest and by id.

    Changed in place, record by record: the event loop runs one task at a time, and no
    reader holds the dicts across an await, so a reader never sees half a change.
    """

    by_digest: dict[str, KeyRecord] = field(default_factory=dict)
    version: int | None = None  # the store's version this snapshot is at
    _ids: dict[str, KeyRecord] = field(default_factory=dict)
    _used: dict[str, int] = field(default_factory=dict)  # key id -> minute last noted
    _pending: set[str] = field(default_factory=set)  # ids used since the last take

    def replace_all(self, records: Iterable[KeyRecord], version: int | None) -> None:
        self.by_digest, self._ids = {}, {}
        for record in records:
            self.put(record)
        self.version = version

    def apply(self, changes: Mapping[str, KeyRecord | None], version: int) -> None:
        """The records changed since this snapshot's version (None: deleted)."""
        for key_id, record in changes.items():
            if record is None:
                self.drop(key_id)
            else:
                self.put(record)
        self.version = version

    def put(self, record: KeyRecord) -> None:
        """Add or replace a record (a change made here applies at once)."""
        self.drop(record.id)
        self.by_digest[record.digest] = record
        self._ids[record.id] = record

    def drop(self, key_id: str) -> None:
        old = self._ids.pop(key_id, None)
        if old is not None and self.by_digest.get(old.digest) is old:
            del self.by_digest[old.digest]

    def find(self, digest: str) -> KeyRecord | None:
        return self.by_digest.get(digest)

    def by_id(self, key_id: str) -> KeyRecord | None:
        return self._ids.get(key_id)

    def __len__(self) -> int:
        return len(self._ids)

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


def check_lifetime(what: str, expires: float, now: float) -> None:
    """ValueError naming `what` when `expires` is not within MAX_LIFETIME_S from now."""
    if not math.isfinite(expires) or expires - now > MAX_LIFETIME_S:
        raise ValueError(
            f"{what} must be at most {MAX_LIFETIME_S} seconds (10 years) from now; "
            "leave the expiry out for a key that does not expire"
        )


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



def _text(data: dict[str, Any], name: str, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not (value or optional):
        raise BadRecord(f"{name} is not a string")
    return value


def _digest(data: dict[str, Any]) -> str:
    value = data.get("digest")
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BadRecord("digest is not a SHA-256 hex digest")
    return value


def _time(data: dict[str, Any], name: str, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(f"{name} is not a number of epoch seconds")
    if not 0 <= value <= LATEST_EPOCH:
        raise BadRecord(f"{name} is out of range ({value!r}; the latest is 9999-12-31)")
    return float(value)


def _scopes(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("scopes") or [RERANK]
    if not isinstance(value, list):
        raise BadRecord("scopes is not a list")
    try:
        return check_scopes(value)
    except (ValueError, TypeError) as exc:
        raise BadRecord(f"scopes: {exc}") from None


def _models(data: dict[str, Any]) -> tuple[str, ...] | None:
    value = data.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise BadRecord("models is not a list of strings")
    return tuple(value)
