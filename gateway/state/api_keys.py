"""API keys at run time: the replica's snapshot kept fresh, and the one place keys change.

`KeyKeeper` keeps this replica's `KeyDirectory` (what the hot path reads) in step with the
shared store: it loads every record at start, then, whenever the store's version moves,
reads only the records changed since its own version (a full load only when it fell too
far behind). It learns of a change by pub/sub at once or, should a message be lost, by
asking every `auth.api_keys_refresh_s`. That interval is the bound within which every
replica honours a new, rotated or revoked key. The same task writes out last use (per
minute) in the background, so a request never waits on Redis for its key.

`KeyService` creates, lists, rotates and revokes keys for an `Actor` (the admin, a team's
manager, or the CLI), checks what that actor may do, and writes an audit log event for
every change (who, when, which key id; never the key). It enforces the limits that keep
one team from filling the store: at most `auth.api_keys_per_team` live keys per team and
`auth.api_key_creations_per_minute` creations by a team's managers; and it keeps
lifetimes bounded: a rotated key keeps its expiry, and a key made by an expiring manage
key does not outlive it unless the admin says so. The admin routes (`gateway.http.keys`)
and `rerank-gateway keys` both call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.config import Config
from gateway.errors import ApiError, bad_request
from gateway.observe.logs import ThrottledWarning, audit_log, log
from policies.access.api_keys import (
    MAX_LIFETIME_S,
    RERANK,
    BadRecord,
    KeyDirectory,
    KeyRecord,
    check_lifetime,
    check_scopes,
    digest_of,
    new_api_key,
)
from policies.access.redis_keys import CapReached, RedisKeyStore
from policies.access.redis_throttle import RedisThrottle
from policies.access.throttle import Throttle
from policies.money.quota import StoreUnavailable

Clock = Callable[[], float]
T = TypeVar("T")
STORE_RETRY_S = 5.0
_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_NAME = 200
_PUBSUB_WAIT_S = 1.0  # one wait for a change message; the poll interval is counted apart
_CLOSE_WAIT_S = 1.0  # longest wait for the listener to stop at shutdown
_DRAIN_MAX = 10_000  # change messages read at once before catching up (one catch-up for all)


class KeyKeeper:
    """This replica's snapshot of the API keys, refreshed from the shared store."""

    def __init__(
        self,
        store: RedisKeyStore,
        refresh_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self.directory = KeyDirectory()
        self._task: asyncio.Task[None] | None = None
        self._reloaded = asyncio.Condition()
        # A reload that read the store before a change made here must not undo it.
        self._lock = asyncio.Lock()
        self._warn = ThrottledWarning("api_keys_store_unreachable")
        self._unreadable = ThrottledWarning("api_key_records_unreadable")

    async def start(self) -> None:
        try:
            await self.reload()
        except StoreUnavailable as exc:  # YAML keys still work; API keys once Redis answers
            self._warn(error=str(exc)[:200], effect="API keys not honoured until it answers")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: closing a pub/sub connection cancelled mid-read can hang, and a
            # shutdown must not wait on it.
            await asyncio.wait({self._task}, timeout=_CLOSE_WAIT_S)
            self._task = None
        with contextlib.suppress(StoreUnavailable):
            await self.flush_used()

    async def reload(self) -> None:
        """Load every record (at start, and when the change log cannot say what changed)."""
        async with self._lock:
            snapshot = await self.store.load()
            self.directory.replace_all(snapshot.records, snapshot.version)
        await self._moved(snapshot.unreadable)

    async def refresh(self) -> bool:
        """Catch up with the store: read the records changed since this snapshot's
        version, or all of them when the log no longer says; True when anything moved."""
        if self.directory.version is None:
            await self.reload()
            return True
        async with self._lock:
            delta = await self.store.changes(self.directory.version)
            moved = delta is not None and delta.version != self.directory.version
            if delta is not None and moved:
                self.directory.apply(delta.changes, delta.version)
        if delta is None:
            await self.reload()
            return True
        if moved:
            await self._moved(delta.unreadable)
        return moved

    async def _moved(self, unreadable: Mapping[str, str]) -> None:
        if unreadable:  # not honoured; listed as unreadable for an admin to revoke
            self._unreadable(records=dict(list(unreadable.items())[:20]))
        async with self._reloaded:
            self._reloaded.notify_all()

    async def change(self, write: Awaitable[T], apply: Callable[[KeyDirectory], None]) -> T:
        """Write a change to the store, then apply it here at once (no reload in between)."""
        async with self._lock:
            result = await write
            apply(self.directory)
            return result

    async def flush_used(self) -> None:
        used = self.directory.take_used()
        try:
            await self.store.mark_used(used)
        except StoreUnavailable:
            for key_id, when in used.items():  # keep them for the next flush
                self.directory.requeue_used(key_id, when)
            raise

    async def wait_for_version(self, version: int | str) -> None:
        """Until the snapshot is at `version` or later (tests wait on this, not on time)."""
        async with self._reloaded:
            await self._reloaded.wait_for(
                lambda: (
                    self.directory.version is not None
                    and self.directory.version >= int(version)
                )
            )

    async def _run(self) -> None:
        client = self.store.client
        if isinstance(client, RedisCluster):  # no pub/sub here: polling alone keeps the bound
            await self._poll_only()
            return
        pubsub = None
        next_poll = self.clock() + self.refresh_s
        while True:
            try:
                if pubsub is None:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.store.channel)
                    await self.refresh()  # a change made while not subscribed
                message = await pubsub.get_message(timeout=_PUBSUB_WAIT_S)
                if message is not None:  # a burst of changes: one catch-up covers them all
                    for _ in range(_DRAIN_MAX):
                        if await pubsub.get_message(timeout=0) is None:
                            break
                if message is not None or self.clock() >= next_poll:
                    next_poll = self.clock() + self.refresh_s
                    await self.refresh()
                    await self.flush_used()
            except asyncio.CancelledError:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pubsub.aclose(), _CLOSE_WAIT_S)
                raise
            except (StoreUnavailable, aioredis.RedisError, OSError, TimeoutError) as exc:
                self._warn(error=exc.__class__.__name__, effect="serving the last known keys")
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    pubsub = None
                await asyncio.sleep(min(self.refresh_s, 1.0))  # back off before reconnecting

    async def _poll_only(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
                await self.flush_used()
            except StoreUnavailable as exc:
                self._warn(error=str(exc)[:200], effect="serving the last known keys")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes keys: the admin, a team's manager, or the CLI against Redis."""

    role: str  # "admin", "manager" or "cli"
    team: str | None = None  # a manager's team
    key_id: str | None = None  # a manager's API key id (None: a key from the config)
    expires: float | None = None  # when a manager's API key expires (None: never)

    def describe(self) -> str:
        if self.role == "manager":
            via = f"API key {self.key_id}" if self.key_id else "a manager key from the config"
            return f"manager of team {self.team} ({via})"
        return self.role

    def may_manage(self, team: str) -> bool:
        return self.role != "manager" or self.team == team

    @property
    def limited(self) -> bool:
        """A manager: creations rate-limited, lifetimes bounded (the admin and CLI: not)."""
        return self.role == "manager"

    def audit(self) -> dict[str, Any]:
        return {"actor": self.describe(), "actor_role": self.role, "actor_team": self.team}


ADMIN = Actor("admin")


class _Keep:
    """The `expires` of a rotation that keeps the old key's expiry."""


KEEP: Final = _Keep()


@dataclass(frozen=True, slots=True)
class Issued:
    record: KeyRecord
    key: str  # shown once, never stored
    warnings: list[str]

    def answer(self, now: float) -> dict[str, Any]:
        return {"key": self.key, **self.record.public(None, now), "warnings": self.warnings}


@dataclass(frozen=True, slots=True)
class Listing:
    keys: list[dict[str, Any]]
    unreadable: list[dict[str, str]]  # records no gateway honours: {id, problem}

    def answer(self) -> dict[str, Any]:
        return {"keys": self.keys, "unreadable": self.unreadable}


class KeyService:
    """Create, list, rotate and revoke API keys; each change is audited."""

    def __init__(
        self,
        config: Config,
        store: RedisKeyStore,
        keeper: KeyKeeper | None = None,
        clock: Clock = time.time,
        via: str = "api",
    ) -> None:
        self.config = config
        self.store = store
        self.keeper = keeper  # this replica's snapshot, updated at once on a change
        self.clock = clock
        self.via = via
        self.cap = config.auth.api_keys_per_team
        self.creations: Throttle = RedisThrottle(
            store.client,
            config.auth.api_keys_prefix,
            "api_key_creations",
            config.auth.api_key_creations_per_minute,
        )

    async def create(
        self,
        actor: Actor,
        team: str,
        *,
        name: str | None = None,
        expires: float | None = None,
        scopes: Sequence[str] = (RERANK,),
        models: Sequence[str] | None = None,
    ) -> Issued:
        now = self.clock()
        self._check_team(actor, team)
        if name is not None and (len(name) > _MAX_NAME or not name.isprintable()):
            raise bad_request(f"name must be printable and at most {_MAX_NAME} characters")
        if expires is not None:
            _check_expiry("expires", expires, now)
        warnings = self._warnings(team)
        expires = _within_actor(actor, expires, expires is not None, warnings)
        try:
            checked = check_scopes(scopes)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        key_id, key = new_api_key()
        record = KeyRecord(
            id=key_id,
            team=team,
            digest=digest_of(key),
            created=now,
            name=name,
            expires=expires,
            scopes=checked,
            models=self._check_models(team, models),
            created_by=actor.describe(),
        )
        await self._throttle(actor, team)
        await self._change(self._save(now, record), lambda d: d.put(record))
        self._audit("api_key_created", actor, record, scopes=list(checked), expires=expires)
        return Issued(record, key, warnings)

    async def listing(self, actor: Actor, team: str | None = None) -> Listing:
        if actor.role == "manager":
            if team is not None and team != actor.team:
                raise _not_your_team(actor, team)
            team = actor.team
        snapshot = await _guard(self.store.load())
        used = await _guard(self.store.last_used())
        now = self.clock()
        chosen = [r for r in snapshot.records if team is None or r.team == team]
        chosen.sort(key=lambda r: (r.team, r.created, r.id))
        unreadable = [{"id": i, "problem": p} for i, p in sorted(snapshot.unreadable.items())]
        if unreadable:
            log.warning(
                "api_key_records_unreadable", records=unreadable[:20], count=len(unreadable)
            )
        # Whose an unreadable record is, no one can tell: only the admin (or CLI) sees them.
        return Listing(
            [r.public(used.get(r.id), now) for r in chosen],
            unreadable if actor.role != "manager" else [],
        )

    async def revoke(self, actor: Actor, key_id: str) -> KeyRecord | None:
        """The revoked record (None: it was unreadable, which only the admin may revoke)."""
        record = await self._existing(actor, key_id, unreadable_ok=True)
        team = None if record is None else record.team
        if not await self._change(self.store.delete(key_id, team), lambda d: d.drop(key_id)):
            raise _unknown_key(key_id)
        self._audit("api_key_revoked", actor, record, key_id=key_id)
        return record

    async def rotate(
        self,
        actor: Actor,
        key_id: str,
        grace_s: float,
        expires: float | _Keep | None = KEEP,
    ) -> tuple[Issued, KeyRecord]:
        """A new key like the old one, with its expiry unless `expires` says otherwise
        (None: never, for the admin only); the old one stays valid for `grace_s` more."""
        if not 0 <= grace_s <= MAX_LIFETIME_S:
            raise bad_request(f"grace_s must be 0 to {MAX_LIFETIME_S} seconds (10 years)")
        old = await self._existing(actor, key_id)
        assert old is not None
        now = self.clock()
        if old.expired(now):
            raise ApiError(
                409, f"key {key_id} has already expired; create a new key instead of rotating"
            )
        warnings = self._warnings(old.team)
        new_expires = _rotated_expiry(actor, old, expires, now)
        explicit = not isinstance(expires, _Keep)
        new_expires = _within_actor(actor, new_expires, explicit, warnings)
        new_id, key = new_api_key()
        record = KeyRecord(
            id=new_id,
            team=old.team,
            digest=digest_of(key),
            created=now,
            name=old.name,
            expires=new_expires,
            scopes=old.scopes,
            models=old.models,
            created_by=actor.describe(),
            rotated_from=old.id,
        )
        ends = now + grace_s
        retired = old.with_expiry(ends if old.expires is None else min(old.expires, ends))

        def apply(directory: KeyDirectory) -> None:
            directory.put(record)
            directory.put(retired)

        await self._throttle(actor, old.team)
        await self._change(self._save(now, record, retired, replaces=old.id), apply)
        self._audit(
            "api_key_rotated",
            actor,
            record,
            replaces=old.id,
            expires=new_expires,
            old_key_expires=retired.expires,
        )
        return Issued(record, key, warnings), retired

    def _check_team(self, actor: Actor, team: str) -> None:
        if not isinstance(team, str) or not _TEAM_NAME.match(team):
            raise bad_request(
                "team must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit"
            )
        if not actor.may_manage(team):
            raise _not_your_team(actor, team)

    def _check_models(self, team: str, models: Sequence[str] | None) -> tuple[str, ...] | None:
        """A key's models narrow its team's: each must be one the team may use."""
        if models is None:
            return None
        allowed = team_models(self.config, team)
        visible = sorted(allowed if allowed is not None else self.config.models)
        if not models:
            raise bad_request("models is empty: leave it out for all of the team's models")
        for model in models:
            if model not in visible:
                raise bad_request(
                    f"model {model!r} is not one team '{team}' may use; choose among: "
                    f"{', '.join(visible)}"
                )
        return tuple(dict.fromkeys(models))

    async def _throttle(self, actor: Actor, team: str) -> None:
        """429 when the team's managers created their allowance of keys this minute."""
        if not actor.limited:
            return
        wait = await _guard(self.creations.take(team))
        if wait > 0:
            per_minute = self.creations.gcra.per_minute
            raise ApiError(
                429,
                f"team '{team}' may create at most {per_minute} API keys per minute "
                f"(auth.api_key_creations_per_minute); retry in {max(1, round(wait))} s, "
                "or ask an admin",
                retry_after_s=wait,
            )

    async def _save(
        self, now: float, *records: KeyRecord, replaces: str | None = None
    ) -> int:
        """Write, within the team's cap on live keys (409 saying what to do beyond it)."""
        team = records[0].team
        try:
            return await self.store.save(*records, cap=self.cap, now=now, replaces=replaces)
        except CapReached as exc:
            raise ApiError(
                409,
                f"team '{team}' has {exc.live} live API keys, the most it may have "
                f"(auth.api_keys_per_team: {self.cap}); revoke keys it no longer uses "
                f"(GET /admin/keys?team={team}, then DELETE /admin/keys/<id>) or ask the "
                "operators to raise auth.api_keys_per_team",
            ) from None

    async def _existing(
        self, actor: Actor, key_id: str, unreadable_ok: bool = False
    ) -> KeyRecord | None:
        try:
            record = await _guard(self.store.get(key_id))
        except BadRecord:
            # Whose it is no one can tell: the admin (or CLI) may revoke it, no one else.
            if unreadable_ok and actor.role != "manager":
                return None
            if actor.role == "manager":
                raise _unknown_key(key_id) from None
            raise ApiError(
                409, f"key {key_id}'s record is unreadable; revoke it and create a new key"
            ) from None
        # A manager is told the same about another team's key as about no key at all.
        if record is None or not actor.may_manage(record.team):
            raise _unknown_key(key_id)
        return record

    async def _change(self, write: Awaitable[T], apply: Callable[[KeyDirectory], None]) -> T:
        """Write to the store (503 when it is down), then update this replica's snapshot."""
        try:
            if self.keeper is None:
                return await write
            return await self.keeper.change(write, apply)
        except StoreUnavailable:
            raise _store_down() from None

    def _warnings(self, team: str) -> list[str]:
        if team in self.config.teams:
            return []
        return [
            f"team {team!r} is not in the config: it has no rate limit, budget or model list "
            f"of its own; add teams.{team} to set them"
        ]

    def _audit(
        self, event: str, actor: Actor, record: KeyRecord | None, **extra: Any
    ) -> None:
        fields = {} if record is None else {"key_id": record.id, "team": record.team}
        audit_log.info(
            event,
            audit=True,
            via=self.via,
            **actor.audit(),
            **{**fields, **extra},
            at=datetime.fromtimestamp(self.clock(), UTC).isoformat(),
        )


def team_models(config: Config, team: str) -> frozenset[str] | None:
    """The models (and aliases) a team may name; None: every model."""
    tc = config.teams.get(team)
    return None if tc is None or tc.models is None else frozenset(tc.models)


def _check_expiry(what: str, expires: float, now: float) -> None:
    if expires <= now:
        raise bad_request(f"{what} is in the past; give a future time (epoch seconds)")
    try:
        check_lifetime(what, expires, now)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _rotated_expiry(
    actor: Actor, old: KeyRecord, expires: float | _Keep | None, now: float
) -> float | None:
    """The new key's expiry: the old key's, or one given; a manager may only shorten it."""
    if isinstance(expires, _Keep):
        return old.expires
    if expires is None:
        if actor.limited:
            raise ApiError(
                403, "only the admin may rotate a key into one that never expires"
            )
        return None
    _check_expiry("expires", expires, now)
    if actor.limited and old.expires is not None and expires > old.expires:
        raise bad_request(
            f"a rotation keeps the key's expiry ({_when(old.expires)}); a manager may move "
            "it earlier, not later: ask an admin"
        )
    return expires


def _within_actor(
    actor: Actor, expires: float | None, explicit: bool, warnings: list[str]
) -> float | None:
    """A key made by an expiring manage key expires with it at the latest: an expiry
    given (`explicit`) that is later is refused; one left out, or kept by a rotation,
    becomes the manager's (with a warning saying so)."""
    bound = actor.expires
    if bound is None or not actor.limited or (expires is not None and expires <= bound):
        return expires
    if explicit:
        raise bad_request(
            f"the key would outlive the manage key creating it (API key {actor.key_id}, "
            f"which expires at {_when(bound)}); give an expiry no later than that, or "
            "ask an admin for a longer-lived key"
        )
    warnings.append(
        f"the key expires at {_when(bound)}, with the manage key that created it "
        f"(API key {actor.key_id}); only an admin can issue a key that outlives it"
    )
    return bound


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _guard(call: Awaitable[T]) -> T:
    try:
        return await call
    except StoreUnavailable:
        raise _store_down() from None


def _store_down() -> ApiError:
    return ApiError(
        503, "the key store (Redis) is unreachable; retry shortly", retry_after_s=STORE_RETRY_S
    )


def _unknown_key(key_id: str) -> ApiError:
    return ApiError(404, f"no API key with id {key_id!r}; list them with GET /admin/keys")


def _not_your_team(actor: Actor, team: str) -> ApiError:
    return ApiError(
        403,
        f"a manager key of team '{actor.team}' may only manage the keys of its own team, "
        f"not those of team '{team}'; ask an admin",
    )
