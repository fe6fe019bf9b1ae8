"""API key records in the shared Redis: durable, the same for every replica.

Keys (one hash tag, so each script touches one cluster slot):
- `<prefix>{api_keys}:records`: hash, key id -> the record as JSON (digest and metadata)
- `<prefix>{api_keys}:used`: hash, key id -> epoch second of its last use (per minute)
- `<prefix>{api_keys}:version`: a counter raised by every change

Every change is one Lua script run: it writes, raises the version and publishes it on
the channel `<prefix>api_keys:changed`, so replicas that subscribe reload at once and
those that missed the message see the new version on their next poll. Nothing here has
a TTL: expiry is a field the gateway checks, so an evicting Redis is the only way to lose
a key (the gateway checks `maxmemory-policy` at start for that reason).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.api_keys import KeyRecord
from policies.redis_quota import guarded

# KEYS: version, records. Every record and the version they belong to, in one atomic step
# (a script rather than MULTI, so it also runs on a Redis Cluster: one slot).
LOAD_LUA = """
return {redis.call('GET', KEYS[1]) or false, redis.call('HGETALL', KEYS[2])}
"""

# KEYS: records, version. ARGV: channel, then id, json pairs. Writes them all at once.
SAVE_LUA = """
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], version)
return version
"""

# KEYS: records, used, version. ARGV: channel, id. Returns 0 when there was no such key.
DELETE_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], version)
return 1
"""

# KEYS: records, used. ARGV: id, epoch pairs. Keeps the latest; skips revoked keys.
USED_LUA = """
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
    if tonumber(ARGV[i + 1]) > seen then
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    end
  end
end
return 1
"""


class RedisKeyStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        tag = f"{prefix}{{api_keys}}"
        self.records_key = f"{tag}:records"
        self.used_key = f"{tag}:used"
        self.version_key = f"{tag}:version"
        self.channel = f"{prefix}api_keys:changed"
        self._load = client.register_script(LOAD_LUA)
        self._save = client.register_script(SAVE_LUA)
        self._delete = client.register_script(DELETE_LUA)
        self._used = client.register_script(USED_LUA)

    async def load(self) -> tuple[list[KeyRecord], str | None]:
        """Every record and the version they were read at (one script run: consistent)."""
        keys = [self.version_key, self.records_key]
        version, flat = await guarded(lambda: self._load(keys=keys))
        records = [KeyRecord.from_json(flat[i]) for i in range(1, len(flat), 2)]
        return records, _text(version)

    async def version(self) -> str | None:
        return _text(await guarded(lambda: self.client.get(self.version_key)))

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await guarded(lambda: self.client.hget(self.records_key, key_id))
        return None if raw is None else KeyRecord.from_json(raw)

    async def save(self, *records: KeyRecord) -> None:
        """Write the records in one step (a rotation writes the new key and the old)."""
        args: list[str | bytes] = [self.channel]
        for record in records:
            args += [record.id, record.to_json()]
        keys = [self.records_key, self.version_key]
        await guarded(lambda: self._save(keys=keys, args=args))

    async def delete(self, key_id: str) -> bool:
        keys = [self.records_key, self.used_key, self.version_key]
        return bool(await guarded(lambda: self._delete(keys=keys, args=[self.channel, key_id])))

    async def last_used(self) -> dict[str, float]:
        raw = await guarded(lambda: self.client.hgetall(self.used_key))
        return {_text(k) or "": float(v) for k, v in raw.items()}

    async def mark_used(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        args: list[str | float] = []
        for key_id, when in used.items():
            args += [key_id, int(when)]
        keys = [self.records_key, self.used_key]
        await guarded(lambda: self._used(keys=keys, args=args))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
