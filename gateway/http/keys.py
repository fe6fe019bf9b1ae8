"""The key routes under `/admin/keys`: issue, list, rotate and revoke API keys.

The global admin may manage every team's keys; a team's manager key (from the config or
an API key with the `manage` scope) only its own team's, and may read its own team's usage.
The logic lives in `gateway.state.api_keys.KeyService` (the CLI calls it too); this module
reads and checks the JSON bodies and answers. Errors are `ApiError`s, answered in Cohere's
shape by the app's error middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDict

from gateway.errors import ApiError, bad_request
from gateway.state.api_keys import KEEP, Actor, KeyService
from policies.api_keys import MAX_LIFETIME_S, RERANK, check_lifetime

DEFAULT_GRACE_S = 86_400.0  # a rotated key's old key keeps working for a day
_CREATE_FIELDS = {"team", "name", "expires_at", "expires_in_s", "scopes", "models"}
_ROTATE_FIELDS = {"grace_s", "expires_at", "expires_in_s", "never_expires"}

KeysHandler = Callable[[web.Request, Actor, KeyService], Awaitable[web.StreamResponse]]
Resolve = Callable[[web.Request], tuple[Actor, KeyService | None]]


def keys_route(resolve: Resolve, handler: KeysHandler) -> Callable[..., Any]:
    """Authenticate the admin or a manager, and hand over the key service."""

    async def route(request: web.Request) -> web.StreamResponse:
        actor, service = resolve(request)
        if service is None:
            raise ApiError(
                403,
                "API keys are disabled: they live in the shared Redis, so set state.redis_url "
                "(keys in the config file work without it)",
            )
        return await handler(request, actor, service)

    return route


async def create_key(request: web.Request, actor: Actor, service: KeyService) -> web.Response:
    """`POST /admin/keys` {team, name?, expires_at?|expires_in_s?, scopes?, models?}: 201 with
    the key (shown this once) and its metadata."""
    body = await _object(request, _CREATE_FIELDS)
    team = body.get("team", actor.team)
    if team is None:
        raise bad_request("team is required: the team the key belongs to")
    issued = await service.create(
        actor,
        _string(body, "team", team),
        name=_optional_string(body, "name"),
        expires=_expiry(body, service.clock()),
        scopes=_strings(body, "scopes") or (RERANK,),
        models=_strings(body, "models"),
    )
    return _json(issued.answer(service.clock()), status=201)


async def list_keys(request: web.Request, actor: Actor, service: KeyService) -> web.Response:
    """`GET /admin/keys?team=`: metadata only (no key, no digest), and the ids of records
    that cannot be read (for the admin to revoke)."""
    listing = await service.listing(actor, request.query.get("team") or None)
    return _json(listing.answer())


async def revoke_key(request: web.Request, actor: Actor, service: KeyService) -> web.Response:
    """`DELETE /admin/keys/{id}`: the key is refused by every replica within the refresh bound."""
    key_id = request.match_info["id"]
    record = await service.revoke(actor, key_id)
    return _json({"id": key_id, "team": None if record is None else record.team, "revoked": True})


async def rotate_key(request: web.Request, actor: Actor, service: KeyService) -> web.Response:
    """`POST /admin/keys/{id}/rotate` {grace_s?, expires_at?|expires_in_s?|never_expires?}:
    a new key with the old one's expiry (unless given); the old one works `grace_s` more."""
    body = await _object(request, _ROTATE_FIELDS, empty_ok=True)
    grace = _number(body, "grace_s", DEFAULT_GRACE_S)
    if not 0 <= grace <= MAX_LIFETIME_S:
        raise bad_request(f"grace_s must be 0 to {MAX_LIFETIME_S} seconds (10 years)")
    never = body.get("never_expires", False)
    if not isinstance(never, bool):
        raise bad_request("never_expires must be true or false")
    given = _expiry(body, service.clock())
    if never and given is not None:
        raise bad_request("give never_expires or an expiry, not both")
    expires = None if never else KEEP if given is None else given
    issued, old = await service.rotate(actor, request.match_info["id"], grace, expires)
    now = service.clock()
    return _json({**issued.answer(now), "old_key": old.public(None, now)}, status=201)


def own_team_query(
    actor: Actor, query: Mapping[str, str], what: str = "usage", path: str = "/admin/usage"
) -> Mapping[str, str]:
    """A manager's report query (usage, depth advice): its own team (the default), never
    another."""
    if actor.role != "manager":
        return query
    asked = query.get("team")
    if asked and asked != actor.team:
        raise ApiError(
            403,
            f"a manager key of team '{actor.team}' may read only that team's {what} "
            f"({path}?team={actor.team})",
        )
    own: MultiDict[str] = MultiDict(query)
    own["team"] = actor.team or ""
    return own


async def _object(request: web.Request, fields: set[str], empty_ok: bool = False) -> dict:
    raw = await request.read()
    if not raw.strip() and empty_ok:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise bad_request(
            f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(fields))}"
        )
    return {k: v for k, v in body.items() if v is not None}


def _string(body: dict, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value


def _optional_string(body: dict, name: str) -> str | None:
    return None if name not in body else _string(body, name, body[name])


def _strings(body: dict, name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name} must be a list of strings")
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"{name} must be a number of seconds")
    return float(value)


def _expiry(body: dict, now: float) -> float | None:
    """`expires_in_s` or `expires_at` as epoch seconds, at most MAX_LIFETIME_S away."""
    if "expires_at" in body and "expires_in_s" in body:
        raise bad_request("give expires_at or expires_in_s, not both")
    if "expires_in_s" in body:
        seconds = _number(body, "expires_in_s", 0.0)
        if seconds <= 0:
            raise bad_request("expires_in_s must be more than 0")
        return _bounded("expires_in_s", now + seconds, now)
    if "expires_at" in body:
        moment = parse_time(_string(body, "expires_at", body["expires_at"]))
        return _bounded("expires_at", moment, now)
    return None


def _bounded(name: str, expires: float, now: float) -> float:
    try:
        check_lifetime(name, expires, now)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return expires


def parse_time(text: str) -> float:
    """ISO 8601 with a zone (`2026-12-31T00:00:00Z`), as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment.timestamp()  # a time near year 1 or 9999 may not convert
    except (ValueError, OverflowError):
        raise bad_request(
            f"expires_at must be an ISO 8601 time with a zone, like 2026-12-31T00:00:00Z "
            f"(got {text[:40]!r})"
        ) from None
    if moment.tzinfo is None:
        raise bad_request("expires_at needs a zone, like 2026-12-31T00:00:00Z")
    return moment.timestamp()


def _json(document: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")
