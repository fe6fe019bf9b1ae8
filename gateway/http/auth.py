"""Bearer keys to teams. Config holds only SHA-256 digests of keys, never keys."""

from __future__ import annotations

import hashlib
import secrets

from gateway.config import Config
from gateway.errors import ApiError
from gateway.state.governance import ANONYMOUS


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


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.required = config.auth.mode == "keys"
        self.teams = {digest: team for team, tc in config.teams.items() for digest in tc.key_sha256}
        self.admin_digest = config.auth.admin_key_sha256

    def team_for(self, authorization: str | None) -> str:
        if not self.required:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            raise ApiError(401, "no api key supplied; send `Authorization: Bearer <team key>`")
        _check_token(token, "api token")
        team = self.teams.get(hash_key(token))
        if team is None:
            raise ApiError(401, "invalid api token")
        return team

    def check_admin(self, authorization: str | None) -> None:
        token = bearer_token(authorization)
        if self.admin_digest is None:
            raise ApiError(403, "admin routes are disabled: set auth.admin_key_sha256")
        if token is None:
            raise ApiError(401, "no admin key supplied; send `Authorization: Bearer <admin key>`")
        _check_token(token, "admin key")
        if not secrets.compare_digest(hash_key(token), self.admin_digest):
            raise ApiError(401, "invalid admin key")
