"""The key routes under `/admin/keys`: issue, list, rotate and revoke API keys.

The global admin may manage every team's keys; a team's manager key (from the config or
an API key with the `manage` scope) only its own team's, and may read its own team's usage.
The logic lives in `gateway.state.api_keys.KeyService` (the CLI calls it too); this module
reads the JSON bodies, checks them against their types (`gateway.http.admin_types`, the
ones the OpenAPI document is generated from) with messages that name the field, and
answers. Errors are `ApiError`s, answered in Cohere's shape by the edge middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from multidict import MultiDict
from pydantic import TypeAdapter, ValidationError

from gateway.errors import ApiError, bad_request
from gateway.http.admin_types import DEFAULT_GRACE_S, CreateKey, RotateKey
from gateway.state.api_keys import KEEP, Actor, KeyService
from policies.access.api_keys import MAX_LIFETIME_S, RERANK, check_lifetime

Body = TypeVar("Body", CreateKey, RotateKey)
_CREATE = TypeAdapter(CreateKey)
_ROTATE = TypeAdapter(RotateKey)
# What a field's value must be, said as the caller should read it (by pydantic's error type).
_STRINGS = {"scopes", "models"}
_NUMBERS = {"grace_s", "expires_in_s"}
_RANGES = {
    "grace_s": f"0 to {MAX_LIFETIME_S} seconds (10 years)",
    "expires_in_s": "more than 0",
}

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
    body = await _object(request, _CREATE)
    team = body.get("team", actor.team)
    if team is None:
        raise bad_request("team is required: the team the key belongs to")
    issued = await service.create(
        actor,
        team,
        name=body.get("name"),
        expires=_expiry(body, service.clock()),
        scopes=body.get("scopes") or (RERANK,),
        models=body.get("models"),
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
    body = await _object(request, _ROTATE, empty_ok=True)
    grace = body.get("grace_s")
    grace = DEFAULT_GRACE_S if grace is None else grace
    never = bool(body.get("never_expires"))
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


async def _object(request: web.Request, kind: TypeAdapter[Body], empty_ok: bool = False) -> Body:
    """The JSON body checked against its type; null means "not set", so nulls are left out."""
    raw = await request.read()
    if not raw.strip() and empty_ok:
        return kind.validate_python({})
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    try:
        valid = kind.validate_python(body)
    except ValidationError as exc:
        raise bad_request(_problem(exc, kind)) from None
    for name in [name for name, value in valid.items() if value is None]:
        del valid[name]  # type: ignore[misc]
    return valid


def _problem(exc: ValidationError, kind: TypeAdapter[Any]) -> str:
    """The first thing wrong with a body, naming the field (unknown fields first)."""
    errors = exc.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        fields = sorted(kind.json_schema()["properties"])
        return f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(fields)}"
    name, problem = str(errors[0]["loc"][0]), errors[0]["type"]
    if name in _STRINGS:
        return f"{name} must be a list of strings"
    if name in _NUMBERS:
        wanted = "a number of seconds" if problem == "float_type" else _RANGES[name]
        return f"{name} must be {wanted}"
    if problem == "bool_type":
        return f"{name} must be true or false"
    return f"{name} must be a string"


def _expiry(body: CreateKey | RotateKey, now: float) -> float | None:
    """`expires_in_s` or `expires_at` as epoch seconds, at most MAX_LIFETIME_S away."""
    if "expires_at" in body and "expires_in_s" in body:
        raise bad_request("give expires_at or expires_in_s, not both")
    seconds = body.get("expires_in_s")
    if seconds is not None:
        return _bounded("expires_in_s", now + seconds, now)
    moment = body.get("expires_at")
    if moment is not None:
        return _bounded("expires_at", parse_time(moment), now)
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
