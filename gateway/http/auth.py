"""Bearer keys to callers. Nothing here holds a key: the config holds SHA-256 digests of
team, manager and admin keys; API keys (issued by `POST /admin/keys`) are digests in the
shared store, read from this replica's in-process snapshot, so resolving any key costs one
hash and dict lookups, never a Redis round trip."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import Config
from gateway.errors import ApiError
from gateway.state.api_keys import ADMIN, Actor, team_models
from gateway.state.governance import ANONYMOUS
from policies.access.api_keys import MANAGE, RERANK, KeyDirectory, KeyRecord


def hash_key(key: str) -> str:
    # surrogateescape: a header's undecodable bytes (aiohttp keeps them as lone
    # surrogates) hash to a digest that matches no key instead of raising.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> str:
    return "rg_" + secrets.token_urlsafe(32)


def bearer_token(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; the scheme is case-insensitive."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _check_token(token: str, what: str) -> None:
    """Keys are visible ASCII (`new_key` makes URL-safe base64): anything else, such as
    raw non-UTF-8 bytes in the header, is a wrong key, answered without quoting it."""
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ApiError(401, f"invalid {what}: keys are printable ASCII without spaces")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a rerank request, and which models they may name (None: all)."""

    team: str
    models: frozenset[str] | None = None
    key_id: str | None = None  # an API key's id; None for a key from the config
    key_label: str = ""  # the key in usage records: the API key's id, or config:<digest[:8]>

    def check_model(self, model: str) -> None:
        """403 naming the models the caller may use, when `model` is not one of them."""
        if self.models is not None and model not in self.models:
            whose = f"API key {self.key_id} of team" if self.key_id else "team"
            # Empty when the team's list no longer has any of the key's models.
            usable = ", ".join(sorted(self.models)) or "none (ask for a new key)"
            raise ApiError(
                403,
                f"model '{model}' is not available to {whose} '{self.team}'; it may use: {usable}",
            )


class Authenticator:
    def __init__(
        self,
        config: Config,
        directory: KeyDirectory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.required = config.auth.mode == "keys"
        self.teams = {digest: team for team, tc in config.teams.items() for digest in tc.key_sha256}
        self.managers = {
            digest: team for team, tc in config.teams.items() for digest in tc.manager_key_sha256
        }
        self.models = {team: team_models(config, team) for team in config.teams}
        self.admin_digest = config.auth.admin_key_sha256
        self.directory = directory  # None: no API keys (no state.redis_url)
        self.clock = clock

    def caller(self, authorization: str | None) -> Caller:
        if not self.required:
            return Caller(ANONYMOUS)
        token = bearer_token(authorization)
        if token is None:
            raise ApiError(401, "no api key supplied; send `Authorization: Bearer <team key>`")
        _check_token(token, "api token")
        digest = hash_key(token)
        team = self.teams.get(digest)
        if team is not None:
            return Caller(team, self.models[team], key_label=f"config:{digest[:8]}")
        record = self._api_key(digest)
        if record is None:
            raise ApiError(401, "invalid api token")
        if RERANK not in record.scopes:
            raise ApiError(
                403,
                f"API key {record.id} has scopes {', '.join(record.scopes)}, not {RERANK}: it "
                "cannot rerank; use a team key",
            )
        return Caller(record.team, self._key_models(record), record.id, record.id)

    def team_for(self, authorization: str | None) -> str:
        return self.caller(authorization).team

    def principal(self, authorization: str | None) -> Actor:
        """The admin, or a team's manager (who may manage that team's keys and usage)."""
        token = bearer_token(authorization)
        if self.admin_digest is None and not self.managers and self.directory is None:
            raise ApiError(403, "admin routes are disabled: set auth.admin_key_sha256")
        if token is None:
            raise ApiError(401, "no admin key supplied; send `Authorization: Bearer <admin key>`")
        _check_token(token, "admin key")
        digest = hash_key(token)
        if self.admin_digest is not None and secrets.compare_digest(digest, self.admin_digest):
            return ADMIN
        team = self.managers.get(digest)
        if team is not None:
            return Actor("manager", team)
        record = self._api_key(digest)
        if record is not None and MANAGE in record.scopes:
            return Actor("manager", record.team, record.id, record.expires)
        if self.admin_digest is None:
            raise ApiError(403, "admin routes are disabled: set auth.admin_key_sha256")
        raise ApiError(401, "invalid admin key")

    def check_admin(self, authorization: str | None) -> None:
        """Only the global admin (a manager key is refused with a message saying so)."""
        actor = self.principal(authorization)
        if actor.role != ADMIN.role:
            raise ApiError(
                403,
                f"this route needs the admin key; a manager key of team '{actor.team}' may only "
                f"manage that team's keys (/admin/keys) and read its usage "
                f"(/admin/usage?team={actor.team}) and depth advice (/admin/depth)",
            )

    def _api_key(self, digest: str) -> KeyRecord | None:
        """The live API key of this digest; 401 saying so when it has expired."""
        if self.directory is None:
            return None
        record = self.directory.find(digest)
        if record is None:
            return None
        now = self.clock()
        if record.expired(now):
            assert record.expires is not None
            when = datetime.fromtimestamp(record.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise ApiError(
                401,
                f"API key {record.prefix}... expired at {when}; ask an admin or your team's "
                "manager for a new key",
            )
        self.directory.note_use(record, now)
        return record

    def _key_models(self, record: KeyRecord) -> frozenset[str] | None:
        team = self.models.get(record.team)
        if record.models is None:
            return team
        own = frozenset(record.models)
        return own if team is None else own & team
