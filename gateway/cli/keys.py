"""`rerank-gateway keys create|list|revoke|rotate`: API keys from the command line.

Two ways, the same logic: with `--config`, straight against the shared Redis of
`state.redis_url` (the `KeyService` the admin routes use; audited as the CLI, with the
OS user); with `--url`, through a running gateway's admin API, authenticated with the
admin or a manager key read from the environment (`RERANK_GATEWAY_ADMIN_KEY`), never
from the command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from gateway.config import Config
from gateway.errors import ApiError
from gateway.http.keys import DEFAULT_GRACE_S, parse_time
from gateway.observe.logs import configure_logging
from gateway.state.api_keys import KEEP, Actor, KeyService
from policies.access.redis_keys import RedisKeyStore

KEY_ENV = "RERANK_GATEWAY_ADMIN_KEY"
_TIMEOUT_S = 10.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def add_parser(sub: Any) -> None:
    keys = sub.add_parser(
        "keys", help="create, list, rotate and revoke API keys (in Redis, or via the admin API)"
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a key (printed once)")
    create.add_argument("--team", required=True)
    create.add_argument("--name", help="a label, e.g. who or what uses the key")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", help="lifetime: 3600, 30m, 12h, 90d")
    expiry.add_argument("--expires-at", help="ISO 8601 time with a zone: 2026-12-31T00:00:00Z")
    create.add_argument(
        "--scope", action="append", dest="scopes", help="rerank (default) and/or manage"
    )
    create.add_argument(
        "--model", action="append", dest="models", help="narrow to these models (repeatable)"
    )
    listing = actions.add_parser("list", help="list keys (metadata only)")
    listing.add_argument("--team")
    revoke = actions.add_parser("revoke", help="revoke a key by id, or all of a team's keys")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--team", help="revoke every API key of this team (offboarding)")
    rotate = actions.add_parser("rotate", help="issue a new key; the old one works a while more")
    rotate.add_argument("id")
    rotate.add_argument("--grace", default=f"{int(DEFAULT_GRACE_S)}", help="e.g. 0, 15m, 1d")
    new_expiry = rotate.add_mutually_exclusive_group()
    new_expiry.add_argument("--expires-in", help="the new key's lifetime (default: the old's)")
    new_expiry.add_argument("--expires-at", help="the new key's expiry, ISO 8601 with a zone")
    new_expiry.add_argument(
        "--never-expires", action="store_true", help="the new key never expires (admin only)"
    )
    for action in (create, listing, revoke, rotate):
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="the gateway's YAML config: use its state.redis_url")
        where.add_argument("--url", help=f"a gateway's base URL: use its admin API with ${KEY_ENV}")
        action.add_argument("--json", action="store_true", help="print JSON")


def run_keys(args: argparse.Namespace, config: Config | None) -> int:
    # Audit events go to stderr as JSON lines, so stdout stays the answer (--json).
    level, fmt = (config.logging.level, config.logging.format) if config else ("info", "json")
    configure_logging(level, fmt, sys.stderr.buffer)
    try:
        if args.url:
            answer = _via_api(args)
        else:
            assert config is not None
            answer = asyncio.run(_via_redis(args, config))
    except ApiError as exc:
        print(f"keys {args.action}: {exc.message}", file=sys.stderr)
        return 1
    _print(args, answer)
    return 0


async def _via_redis(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    if not config.state.redis_url:
        raise ApiError(400, "the config has no state.redis_url: API keys live there")
    client = aioredis.from_url(
        config.state.redis_url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
    )
    try:
        store = RedisKeyStore(client, config.auth.api_keys_prefix)
        service = KeyService(config, store, via=f"cli (os user {_os_user()})")
        actor = Actor("cli")
        now = time.time()
        if args.action == "create":
            issued = await service.create(
                actor,
                args.team,
                name=args.name,
                expires=_expires(args, now),
                scopes=args.scopes or ["rerank"],
                models=args.models,
            )
            return issued.answer(now)
        if args.action == "list":
            return (await service.listing(actor, args.team)).answer()
        if args.action == "revoke":
            listing = await service.listing(actor, args.team)
            ids = [args.id] if args.id else [k["id"] for k in listing.keys]
            revoked = []
            for key_id in ids:
                record = await service.revoke(actor, key_id)
                revoked.append({"id": key_id, "team": None if record is None else record.team})
            return {"revoked": revoked}
        given = None if args.never_expires else _expires(args, now)
        expiry = KEEP if given is None and not args.never_expires else given  # KEEP: the old's
        issued, old = await service.rotate(actor, args.id, _duration(args.grace), expiry)
        return {**issued.answer(now), "old_key": old.public(None, now)}
    finally:
        await client.aclose()


def _via_api(args: argparse.Namespace) -> dict[str, Any]:
    key = os.environ.get(KEY_ENV)
    if not key:
        raise ApiError(400, f"set {KEY_ENV} to the admin key (or a team manager key)")
    base = args.url.rstrip("/") + "/admin/keys"
    if args.action == "create":
        body: dict[str, Any] = {
            "team": args.team,
            "name": args.name,
            "scopes": args.scopes,
            "models": args.models,
        }
        if args.expires_in:
            body["expires_in_s"] = _duration(args.expires_in)
        if args.expires_at:
            body["expires_at"] = args.expires_at
        return _call("POST", base, key, body)
    if args.action == "list":
        query = f"?team={urllib.parse.quote(args.team)}" if args.team else ""
        return _call("GET", base + query, key)
    if args.action == "revoke":
        if args.id:
            ids = [args.id]
        else:
            team = urllib.parse.quote(args.team)
            ids = [k["id"] for k in _call("GET", f"{base}?team={team}", key)["keys"]]
        revoked = [_call("DELETE", f"{base}/{urllib.parse.quote(i, safe='')}", key) for i in ids]
        return {"revoked": [{"id": r["id"], "team": r["team"]} for r in revoked]}
    key_id = urllib.parse.quote(args.id, safe="")
    rotation: dict[str, Any] = {"grace_s": _duration(args.grace)}
    if args.expires_in:
        rotation["expires_in_s"] = _duration(args.expires_in)
    if args.expires_at:
        rotation["expires_at"] = args.expires_at
    if args.never_expires:
        rotation["never_expires"] = True
    return _call("POST", f"{base}/{key_id}/rotate", key, rotation)


def _call(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else orjson.dumps({k: v for k, v in body.items() if v is not None})
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise ApiError(exc.code, f"{exc.code} from the gateway: {message}") from None
    except urllib.error.URLError as exc:
        raise ApiError(503, f"cannot reach {url}: {exc.reason}") from None


def _expires(args: argparse.Namespace, now: float) -> float | None:
    if args.expires_in:
        return now + _duration(args.expires_in)
    if args.expires_at:
        return parse_time(args.expires_at)
    return None


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise ApiError(400, f"not a duration: {text!r} (use 3600, 30m, 12h or 90d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _print(args: argparse.Namespace, answer: dict[str, Any]) -> None:
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    if "keys" in answer:
        print(table(answer["keys"]))
        for bad in answer.get("unreadable", []):
            print(
                f"warning: key record {bad['id']!r} is unreadable ({bad['problem']}); no gateway "
                "honours it: revoke it with `rerank-gateway keys revoke ID`",
                file=sys.stderr,
            )
        return
    if "key" in answer:
        print(f"key:     {answer['key']}")
        print("         (shown this once: only its digest is stored)")
        print(f"id:      {answer['id']}\nteam:    {answer['team']}")
        print(f"scopes:  {', '.join(answer['scopes'])}")
        print(f"expires: {_when(answer['expires'])}")
        if answer.get("old_key"):
            old = answer["old_key"]
            print(f"old key: {old['id']} keeps working until {_when(old['expires'])}")
        for warning in answer.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        return
    for revoked in answer["revoked"]:
        print(f"revoked {revoked['id']} (team {revoked['team'] or 'unknown'})")
    if not answer["revoked"]:
        print("no API keys to revoke")


def table(keys: list[dict[str, Any]]) -> str:
    head = ["id", "team", "name", "prefix", "scopes", "models", "created", "expires", "last_used"]
    rows = [head]
    for k in keys:
        try:
            rows.append(_row(k))
        except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
            # A gateway of another version may answer other fields: show what is there.
            rows.append([str(k.get("id", "?")), str(k.get("team", "?")), f"(cannot show: {exc})"])
            rows[-1] += [""] * (len(head) - 3)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines if keys else [*lines, "(no API keys)"])


def _row(k: dict[str, Any]) -> list[str]:
    expires = _when(k["expires"]) + (" (expired)" if k["expired"] else "")
    models = ",".join(k["models"]) if k["models"] else "team's"
    return [
        k["id"],
        k["team"],
        k["name"] or "-",
        k["prefix"],
        ",".join(k["scopes"]),
        models,
        _when(k["created"]),
        expires,
        _when(k["last_used"]),
    ]


def _when(epoch: float | None) -> str:
    """A time as a UTC date; one no date can show (past year 9999) as its number."""
    if epoch is None:
        return "never"
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{epoch} (epoch s)"
