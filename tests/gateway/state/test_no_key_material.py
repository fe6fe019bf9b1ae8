"""No key material anywhere but the caller's hands: Redis holds digests and metadata,
the logs and audit events name key ids, never a key (nor its secret part, nor its digest);
every create, rotate and revoke is audited with who and when."""

from __future__ import annotations

from typing import Any

import redis
import structlog

from gateway.http.auth import hash_key
from tests.fakes.cohere import FakeCohere
from tests.support.keys import MANAGER_KEY, call, rerank, start_replicas, with_manager
from tests.support.servers import ServerLoop


def dump_prefix(client: redis.Redis, prefix: str) -> bytes:
    """Every key name, field and value under `prefix`, as one blob to search."""
    blob = b""
    for name in client.scan_iter(match=prefix + "*", count=1000):
        kind = client.type(name)
        blob += name + b"\n"
        if kind == b"hash":
            for field, value in client.hgetall(name).items():
                blob += field + b"=" + value + b"\n"
        elif kind == b"string":
            blob += (client.get(name) or b"") + b"\n"
        elif kind == b"zset":  # a team's key ids by expiry
            for member, score in client.zrange(name, 0, -1, withscores=True):
                blob += member + b"=%r\n" % score
        elif kind == b"stream":  # the change log: key ids per version
            for entry_id, fields in client.xrange(name):
                blob += entry_id + b"".join(k + b"=" + v for k, v in fields.items()) + b"\n"
        else:
            raise AssertionError(f"unexpected {kind!r} at {name!r}")
    return blob


async def test_redis_logs_and_audit_hold_no_key_material(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    pair = start_replicas(
        servers, with_manager(fake_cohere[1], key_prefix), key_prefix, redis_client
    )
    a, b = pair.urls
    issued: list[dict[str, Any]] = []
    with structlog.testing.capture_logs() as logs:
        status, first = await call("POST", a + "/admin/keys", body={"team": "search"})
        issued.append(first)
        status, own = await call("POST", b + "/admin/keys", MANAGER_KEY, {"name": "by-manager"})
        issued.append(own)
        status, rotated = await call("POST", a + f"/admin/keys/{first['id']}/rotate")
        issued.append(rotated)
        pair.wait_all()
        for key in issued:
            await rerank(b, key["key"])
        await rerank(b, first["key"][:-1] + "x")  # a wrong key, close to a real one
        status, _ = await call("DELETE", b + f"/admin/keys/{own['id']}", MANAGER_KEY)
        assert status == 200
        pair.servers.run(pair.keeper(1).flush_used())
    keys = [k["key"] for k in issued]
    secrets = [k.split("_", 2)[2] for k in keys]  # rgk_<hex id>_<secret>
    stored = dump_prefix(redis_client, key_prefix)
    for key, secret in zip(keys, secrets, strict=True):
        assert key.encode() not in stored and secret.encode() not in stored
        assert secret[:12].encode() not in stored
    assert hash_key(rotated["key"]).encode() in stored  # what is kept instead
    logged = repr(logs)
    for key, secret in zip(keys, secrets, strict=True):
        assert key not in logged and secret[:12] not in logged and hash_key(key) not in logged
    assert MANAGER_KEY not in logged and hash_key(MANAGER_KEY) not in logged

    audit = [e for e in logs if e.get("audit")]
    assert [(e["event"], e["key_id"], e["actor"]) for e in audit] == [
        ("api_key_created", first["id"], "admin"),
        ("api_key_created", own["id"], "manager of team search (a manager key from the config)"),
        ("api_key_rotated", rotated["id"], "admin"),
        ("api_key_revoked", own["id"], "manager of team search (a manager key from the config)"),
    ]
    assert audit[2]["replaces"] == first["id"] and audit[2]["old_key_expires"] is not None
    assert all(e["team"] == "search" and e["at"].endswith("+00:00") for e in audit)
    assert {e["via"] for e in audit} == {"api"}
