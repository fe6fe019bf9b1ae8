"""Signed-in sessions of the status page: a random token per sign-in, only its digest kept.

The browser holds the token (in a cookie); the store holds `sha256(token)` -> when the
session began, when it was last seen, and which admin key made it (`admin`: a digest of
that key's digest). A session ends `max_age_s` after sign-in, after `idle_s` without use
(last use is written at most once a minute, so idle expiry is to the minute), at
sign-out, and when the admin key changes: a session is good only for the admin key that
made it, and `sweep` deletes those of any other.

Stores: memory (one process), a directory that the workers of one machine share (for
`--workers N` without Redis), and Redis (`policies.access.redis_sessions`: every replica).
Someone who reads a store learns when admins signed in, never a token that works.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import orjson

SEEN_RESOLUTION_S = 60.0  # last use is written at most this often
MAX_SESSIONS = 1_000  # beyond this the oldest sessions end (each needs the admin key)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    max_age_s: float
    idle_s: float


@dataclass(frozen=True, slots=True)
class Session:
    admin: str  # which admin key made it
    created: float  # epoch seconds
    seen: float  # last use, to the minute

    def to_json(self) -> bytes:
        return orjson.dumps({"admin": self.admin, "created": self.created, "seen": self.seen})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Session | None:
        """None for anything that is not a session (it is then treated as no session)."""
        try:
            data = orjson.loads(raw)
            return cls(str(data["admin"]), float(data["created"]), float(data["seen"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class SessionStore(Protocol):
    async def get(self, digest: str) -> Session | None: ...

    async def put(self, digest: str, session: Session) -> None: ...

    async def touch(self, digest: str, session: Session) -> None:
        """`put`, only if the session is still there (a sign-out elsewhere wins)."""
        ...

    async def delete(self, digest: str) -> None: ...

    async def all(self) -> dict[str, Session]: ...


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Sessions:
    """Open, check and close sessions in a store, by the settings' expiry rules."""

    def __init__(
        self,
        store: SessionStore,
        settings: SessionSettings,
        clock: Callable[[], float] = time.time,
        most: int = MAX_SESSIONS,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.most = most

    async def open(self, admin: str) -> str:
        """A new session of `admin`; the token is for the browser only."""
        await self.sweep(admin, room_for_one=True)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        await self.store.put(digest_of(token), Session(admin, now, now))
        return token

    async def check(self, token: str, admin: str) -> bool:
        """Whether `token` is a live session of `admin`; notes its use."""
        digest = digest_of(token)
        session = await self.store.get(digest)
        if session is None:
            return False
        now = self.clock()
        if not self._live(session, admin, now):
            await self.store.delete(digest)
            return False
        if now - session.seen >= SEEN_RESOLUTION_S:
            await self.store.touch(digest, replace(session, seen=now))
        return True

    async def close(self, token: str) -> None:
        await self.store.delete(digest_of(token))

    async def sweep(self, admin: str, room_for_one: bool = False) -> int:
        """Delete the sessions that ended or belong to another admin key (and the oldest,
        past `most`); return how many."""
        now = self.clock()
        sessions = await self.store.all()
        ended = [d for d, s in sessions.items() if not self._live(s, admin, now)]
        live = sorted((s.created, d) for d, s in sessions.items() if self._live(s, admin, now))
        excess = len(live) + (1 if room_for_one else 0) - self.most
        ended += [d for _, d in live[: max(0, excess)]]
        for digest in ended:
            await self.store.delete(digest)
        return len(ended)

    def _live(self, session: Session, admin: str, now: float) -> bool:
        return (
            secrets.compare_digest(session.admin, admin)
            and now < session.created + self.settings.max_age_s
            and now < session.seen + self.settings.idle_s
        )


class MemorySessionStore:
    """One process's sessions (the single-process default)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    async def get(self, digest: str) -> Session | None:
        return self._sessions.get(digest)

    async def put(self, digest: str, session: Session) -> None:
        self._sessions[digest] = session

    async def touch(self, digest: str, session: Session) -> None:
        if digest in self._sessions:
            self._sessions[digest] = session

    async def delete(self, digest: str) -> None:
        self._sessions.pop(digest, None)

    async def all(self) -> dict[str, Session]:
        return dict(self._sessions)


class FileSessionStore:
    """Sessions as small files in a directory that only this user may read, one per
    session, named by its digest: the workers of one machine share them without Redis.
    Writes go to a temporary file renamed into place, so a reader never sees half of one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def get(self, digest: str) -> Session | None:
        try:
            return Session.from_json(self._path(digest).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    async def put(self, digest: str, session: Session) -> None:
        path = self._path(digest)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(session.to_json())
        os.replace(partial, path)

    async def touch(self, digest: str, session: Session) -> None:
        if self._path(digest).exists():  # a sign-out in between may still be undone: rare,
            await self.put(digest, session)  # and the session ends at its max age anyway

    async def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._path(digest).unlink()

    async def all(self) -> dict[str, Session]:
        found = {}
        for path in self.directory.iterdir():
            if _DIGEST.match(path.name) and (session := await self.get(path.name)) is not None:
                found[path.name] = session
        return found

    def _path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):  # a name of our own making only: no path tricks
            raise ValueError("not a session digest")
        return self.directory / digest
