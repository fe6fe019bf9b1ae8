"""Status-page sessions (policies.access.sessions) in the state Redis, so a session made on one
replica is honoured, and ended, on every replica.

Key: `<prefix>{admin_sessions}`, a hash: sha256(token) -> the session as JSON. One key
(one cluster slot); it stays small, since only a correct admin key opens a session and
every sign-in sweeps out the sessions that ended.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.access.sessions import Session
from policies.money.redis_quota import guarded

# KEYS: the hash. ARGV: digest, session. Writes only if the session is still there.
TOUCH_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


class RedisSessionStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}{{admin_sessions}}"
        self._touch = client.register_script(TOUCH_LUA)

    async def get(self, digest: str) -> Session | None:
        raw = await guarded(lambda: self.client.hget(self.key, digest))
        return None if raw is None else Session.from_json(raw)

    async def put(self, digest: str, session: Session) -> None:
        await guarded(lambda: self.client.hset(self.key, digest, session.to_json()))

    async def touch(self, digest: str, session: Session) -> None:
        args: list[str | bytes] = [digest, session.to_json()]
        await guarded(lambda: self._touch(keys=[self.key], args=args))

    async def delete(self, digest: str) -> None:
        await guarded(lambda: self.client.hdel(self.key, digest))

    async def all(self) -> dict[str, Session]:
        raw = await guarded(lambda: self.client.hgetall(self.key))
        found = {}
        for digest, value in raw.items():
            session = Session.from_json(value)
            name = digest.decode() if isinstance(digest, bytes) else digest
            if session is None:  # not a session: treated as an ended one
                session = Session("", 0.0, 0.0)
            found[name] = session
        return found
