"""Signing in to the status page: admin sessions, and failed attempts limited, logged and
counted.

A correct admin key posted to the sign-in form opens a session (`policies.access.sessions`): the
browser gets a random token, the store keeps only its digest. Sessions live in the state
Redis when there is one, so every replica honours and ends them; otherwise in this
process or, with several workers, in files the workers share. A session is good only for
the admin key that made it, so another `auth.admin_key_sha256` (a reload or a restart)
ends every session made before; `sweep` deletes them from the store.

Failed sign-ins are limited per minute, per client address and in all (in Redis when there
is one, so the limit holds across replicas): past a limit the form answers 429 with
Retry-After without checking the key, so guessing costs the same however many connections
make it. Every attempt is counted (`rerank_admin_sign_ins_total{outcome}`); refusals are
logged as `admin_sign_in_refused` (at most once per 30 s, with how many there were and the
last client address; never the key), sign-ins and sign-outs as audit events.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config
from gateway.errors import ApiError
from gateway.observe.logs import ThrottledWarning, audit_log
from gateway.observe.metrics import Metrics
from gateway.state import redis_client
from policies.access.redis_sessions import RedisSessionStore
from policies.access.redis_throttle import RedisThrottle
from policies.access.sessions import (
    FileSessionStore,
    MemorySessionStore,
    Sessions,
    SessionSettings,
    SessionStore,
    digest_of,
)
from policies.access.throttle import MemoryThrottle, Throttle
from policies.money.quota import StoreUnavailable

EVERYONE = "all"  # the key of the limit on failures from every address together
STORE_RETRY_S = 5.0
CheckAdmin = Callable[[str | None], None]  # raises ApiError unless given the admin key


def local_store(shared_dir: str | None) -> SessionStore:
    """Sessions without Redis: in memory for one process, in files that the workers of
    one machine share (`shared_dir`: the directory their parent made for them)."""
    if shared_dir:
        return FileSessionStore(Path(shared_dir) / "admin-sessions")
    return MemorySessionStore()


def admin_tag(admin_digest: str | None) -> str:
    """What a session records of the admin key that made it: a digest of its digest."""
    return "" if admin_digest is None else hashlib.sha256(admin_digest.encode()).hexdigest()


class SignIn:
    """The sign-in form's logic, without HTTP: sign in, check, sign out."""

    def __init__(
        self,
        sessions: Sessions,
        per_address: Throttle,
        everyone: Throttle,
        check_admin: CheckAdmin,
        admin: str,
        metrics: Metrics,
    ) -> None:
        self.sessions = sessions
        self.per_address = per_address
        self.everyone = everyone
        self.check_admin = check_admin
        self.admin = admin
        self.metrics = metrics
        self._refused = ThrottledWarning("admin_sign_in_refused")
        self._down = ThrottledWarning("admin_sessions_store_unreachable")

    @classmethod
    def build(
        cls,
        config: Config,
        redis: redis_client.Client | None,
        local: SessionStore,
        check_admin: CheckAdmin,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> SignIn:
        auth = config.auth
        settings = SessionSettings(auth.session_max_age_s, auth.session_idle_s)
        per_address: Throttle
        everyone: Throttle
        if redis is not None:
            store: SessionStore = RedisSessionStore(redis, auth.api_keys_prefix)
            per_address, everyone = (
                RedisThrottle(redis, auth.api_keys_prefix, name, per_minute)
                for name, per_minute in _limits(config)
            )
        else:
            store = local
            per_address, everyone = (
                MemoryThrottle(name, per_minute) for name, per_minute in _limits(config)
            )
        sessions = Sessions(store, settings, clock)
        admin = admin_tag(auth.admin_key_sha256)
        return cls(sessions, per_address, everyone, check_admin, admin, metrics)

    async def sign_in(self, key: str | None, address: str) -> str:
        """A new session's token for the admin key; ApiError (401, 403, 429, 503) otherwise."""
        try:
            wait = max(await self.per_address.wait(address), await self.everyone.wait(EVERYONE))
            if wait > 0:
                self._refuse("throttled", address)
                raise ApiError(
                    429,
                    f"too many failed sign-ins; wait {max(1, round(wait))} s before trying "
                    "again (scripts can send Authorization: Bearer <admin key> instead)",
                    retry_after_s=wait,
                )
            try:
                self.check_admin(f"Bearer {key}" if key else None)
            except ApiError:
                await self.per_address.take(address)
                await self.everyone.take(EVERYONE)
                self._refuse("refused", address)
                raise
            token = await self.sessions.open(self.admin)
        except StoreUnavailable:
            raise ApiError(
                503,
                "the session store (Redis) is unreachable; sign in again shortly, or send "
                "Authorization: Bearer <admin key>",
                retry_after_s=STORE_RETRY_S,
            ) from None
        self.metrics.sign_ins.labels("ok").inc()
        audit_log.info("admin_signed_in", audit=True, address=address, session=_short(token))
        return token

    async def signed_in(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            return await self.sessions.check(token, self.admin)
        except StoreUnavailable as exc:
            self._down(error=str(exc)[:200], effect="the status page asks to sign in")
            return False

    async def sign_out(self, token: str | None, address: str) -> None:
        if not token:
            return
        try:
            await self.sessions.close(token)
        except StoreUnavailable:
            raise ApiError(
                503,
                "the session store (Redis) is unreachable: the session could not be ended; "
                "try again shortly",
                retry_after_s=STORE_RETRY_S,
            ) from None
        audit_log.info("admin_signed_out", audit=True, address=address, session=_short(token))

    async def sweep(self) -> None:
        """Delete sessions that ended or were made with another admin key."""
        try:
            await self.sessions.sweep(self.admin)
        except StoreUnavailable as exc:  # they are refused when used anyway
            self._down(error=str(exc)[:200], effect="old sessions are refused when used")

    def _refuse(self, outcome: str, address: str) -> None:
        self.metrics.sign_ins.labels(outcome).inc()
        self._refused(reason=outcome, address=address)


def _limits(config: Config) -> tuple[tuple[str, int], tuple[str, int]]:
    auth = config.auth
    return (
        ("sign_in_failures", auth.sign_in_failures_per_minute_per_address),
        ("sign_in_failures_all", auth.sign_in_failures_per_minute),
    )


def _short(token: str) -> str:
    """A name for a session in the logs: the start of its digest (never the token)."""
    return digest_of(token)[:12]
