"""API key records in the shared Redis: durable, the same for every replica.

Keys (one hash tag, so each script touches one cluster slot):
- `<prefix>{api_keys}:records`: hash, key id -> the record as JSON (digest and metadata)
- `<prefix>{api_keys}:used`: hash, key id -> epoch second of its last use (per minute)
- `<prefix>{api_keys}:version`: a counter raised by every change
- `<prefix>{api_keys}:log`: a stream with one entry per version, naming the key ids that
  change touched (entry id `<version>-0`), trimmed to about LOG_LENGTH entries
- `<prefix>{api_keys}:team:<team>`: sorted set, the team's key ids scored by expiry
  (NEVER for none), so counting a team's live keys costs one ZCOUNT
- `<prefix>{api_keys}:indexed`: set once the team sets hold every record

Every change is one Lua script run: it writes, raises the version, appends the ids it
touched to the log and publishes the version on the channel `<prefix>api_keys:changed`.
A replica at version v catches up by reading the log's entries after v and only the
records they name (`changes`); it loads everything only when the log no longer reaches
back to v (it fell more than MOST_CHANGES behind, or the log was trimmed or skipped a
version, as a change written by an earlier gateway version does). Nothing here has a TTL:
expiry is a field the gateway checks, so an evicting Redis is the only way to lose a key
(the gateway checks `maxmemory-policy` at start for that reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.access.api_keys import BadRecord, KeyRecord
from policies.money.redis_quota import guarded

LOG_LENGTH = 10_000  # log entries kept (approximately: Redis trims whole nodes)
MOST_CHANGES = 1_000  # a replica further behind than this loads every record instead
NEVER = 1e15  # the expiry score of a key that does not expire (a finite, Lua-safe number)

# KEYS: version, records. Every record and the version they belong to, in one atomic step
# (a script rather than MULTI, so it also runs on a Redis Cluster: one slot).
LOAD_LUA = """
return {redis.call('GET', KEYS[1]) or false, redis.call('HGETALL', KEYS[2])}
"""

# Raise the version, log the ids (ARGV from `first`, every third) and publish the version.
_CHANGED_LUA = """
local function changed(version_key, log_key, channel, length, first, step)
  local version = redis.call('INCR', version_key)
  local top = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)[1]
  if top and tonumber(string.match(top[1], '^(%d+)')) >= version then
    redis.call('DEL', log_key)  -- the version was reset: an older log cannot describe it
  end
  local fields = {}
  for i = first, #ARGV, step do
    fields[#fields + 1] = 'id'
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('XADD', log_key, 'MAXLEN', '~', length, version .. '-0', unpack(fields))
  redis.call('PUBLISH', channel, version)
  return version
end
"""

# KEYS: records, version, log, team set.
# ARGV: channel, log length, now, cap (-1: none), replaced id ('': none),
#       then id, expiry score, json per record.
# Returns {'ok', version} or {'cap', live keys}: the team's live keys (unexpired, the
# replaced one not counted) plus the new one would exceed the cap.
SAVE_LUA = _CHANGED_LUA + """
local now, cap = ARGV[3], tonumber(ARGV[4])
local function live()
  local n = redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf')
  local score = ARGV[5] ~= '' and redis.call('ZSCORE', KEYS[4], ARGV[5])
  if score and tonumber(score) > tonumber(now) then n = n - 1 end
  return n
end
if cap >= 0 and live() + 1 > cap then
  -- ids whose record is gone (revoked by a writer that kept no team set) do not count
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. now, '+inf')) do
    if redis.call('HEXISTS', KEYS[1], id) == 0 then redis.call('ZREM', KEYS[4], id) end
  end
  local n = live()
  if n + 1 > cap then return {'cap', n} end
end
for i = 6, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i])
end
return {'ok', changed(KEYS[2], KEYS[3], ARGV[1], ARGV[2], 6, 3)}
"""

# KEYS: records, used, version, log, team set. ARGV: channel, log length, id.
# Returns 0 when there was no such key.
DELETE_LUA = _CHANGED_LUA + """
if redis.call('HDEL', KEYS[1], ARGV[3]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
changed(KEYS[3], KEYS[4], ARGV[1], ARGV[2], 3, 1)
return 1
"""

# KEYS: version, log, records. ARGV: the caller's version, the most changes to return.
# Returns {'same', version}, {'full'} (load everything) or {'delta', version, ids,
# records}: the ids changed since the caller's version and their records (false: deleted).
CHANGES_LUA = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if since == version then return {'same', version} end
if since > version or version - since > tonumber(ARGV[2]) then return {'full'} end
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
if #entries ~= version - since then return {'full'} end  -- trimmed, or a change not logged
local ids, seen = {}, {}
for _, entry in ipairs(entries) do
  for j = 2, #entry[2], 2 do
    local id = entry[2][j]
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
end
if #ids == 0 then return {'delta', version, {}, {}} end
return {'delta', version, ids, redis.call('HMGET', KEYS[3], unpack(ids))}
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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every readable record at one version; `unreadable`: key id -> what is wrong."""

    records: list[KeyRecord]
    version: int  # 0: no change was ever made
    unreadable: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delta:
    """The records changed since a version (None: deleted, or unreadable now)."""

    version: int
    changes: dict[str, KeyRecord | None]
    unreadable: dict[str, str]


class CapReached(Exception):
    def __init__(self, live: int) -> None:
        super().__init__(f"{live} live keys")
        self.live = live


class RedisKeyStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        self.tag = f"{prefix}{{api_keys}}"
        self.records_key = f"{self.tag}:records"
        self.used_key = f"{self.tag}:used"
        self.version_key = f"{self.tag}:version"
        self.log_key = f"{self.tag}:log"
        self.indexed_key = f"{self.tag}:indexed"
        self.channel = f"{prefix}api_keys:changed"
        self._indexed = False
        self._load = client.register_script(LOAD_LUA)
        self._save = client.register_script(SAVE_LUA)
        self._delete = client.register_script(DELETE_LUA)
        self._changes = client.register_script(CHANGES_LUA)
        self._used = client.register_script(USED_LUA)

    def team_key(self, team: str) -> str:
        return f"{self.tag}:team:{team}"

    async def load(self) -> Snapshot:
        """Every record and the version they were read at (one script run: consistent)."""
        keys = [self.version_key, self.records_key]
        version, flat = await guarded(lambda: self._load(keys=keys))
        records, unreadable = [], {}
        for i in range(0, len(flat), 2):
            try:
                records.append(KeyRecord.from_json(flat[i + 1]))
            except BadRecord as exc:
                unreadable[_text(flat[i])] = str(exc)
        return Snapshot(records, int(version or 0), unreadable)

    async def changes(self, since: int) -> Delta | None:
        """What changed after version `since`; None when only a full load can tell."""
        keys = [self.version_key, self.log_key, self.records_key]
        answer = await guarded(lambda: self._changes(keys=keys, args=[since, MOST_CHANGES]))
        kind = _text(answer[0])
        if kind == "full":
            return None
        if kind == "same":
            return Delta(int(answer[1]), {}, {})
        changes: dict[str, KeyRecord | None] = {}
        unreadable: dict[str, str] = {}
        for raw_id, raw in zip(answer[2], answer[3], strict=True):
            key_id = _text(raw_id)
            changes[key_id] = None
            if raw:  # false (None here) when the key was deleted
                try:
                    changes[key_id] = KeyRecord.from_json(raw)
                except BadRecord as exc:
                    unreadable[key_id] = str(exc)
        return Delta(int(answer[1]), changes, unreadable)

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record, None when there is none; BadRecord when it cannot be read."""
        raw = await guarded(lambda: self.client.hget(self.records_key, key_id))
        return None if raw is None else KeyRecord.from_json(raw)

    async def save(
        self,
        *records: KeyRecord,
        cap: int | None = None,
        now: float = 0.0,
        replaces: str | None = None,
    ) -> int:
        """Write the records of one team in one step (a rotation writes the new key and the
        old) and return the new version. With `cap`: CapReached, and nothing written, when
        the team's live keys at `now` (`replaces` not counted) plus one would exceed it."""
        team = records[0].team
        assert all(r.team == team for r in records)
        if cap is not None:
            await self._ensure_indexed()
        args: list[str | bytes | float | int] = [
            self.channel,
            LOG_LENGTH,
            repr(now),
            -1 if cap is None else cap,
            replaces or "",
        ]
        for record in records:
            args += [record.id, _score(record), record.to_json()]
        keys = [self.records_key, self.version_key, self.log_key, self.team_key(team)]
        answer = await guarded(lambda: self._save(keys=keys, args=args))
        if _text(answer[0]) == "cap":
            raise CapReached(int(answer[1]))
        return int(answer[1])

    async def delete(self, key_id: str, team: str | None) -> bool:
        """Delete a record (`team`: its team's, None when the record was unreadable)."""
        keys = [
            self.records_key,
            self.used_key,
            self.version_key,
            self.log_key,
            self.team_key(team or ""),
        ]
        args: list[str | int] = [self.channel, LOG_LENGTH, key_id]
        return bool(await guarded(lambda: self._delete(keys=keys, args=args)))

    async def last_used(self) -> dict[str, float]:
        raw = await guarded(lambda: self.client.hgetall(self.used_key))
        return {_text(k): float(v) for k, v in raw.items()}

    async def mark_used(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        args: list[str | float] = []
        for key_id, when in used.items():
            args += [key_id, int(when)]
        keys = [self.records_key, self.used_key]
        await guarded(lambda: self._used(keys=keys, args=args))

    async def _ensure_indexed(self) -> None:
        """Records written before the team sets existed join them, once per store."""
        if self._indexed:
            return
        if not await guarded(lambda: self.client.exists(self.indexed_key)):
            snapshot = await self.load()

            async def build() -> None:
                async with self.client.pipeline(transaction=False) as pipe:
                    for record in snapshot.records:
                        pipe.zadd(self.team_key(record.team), {record.id: _score(record)})
                    pipe.set(self.indexed_key, 1)
                    await pipe.execute()

            await guarded(build)
        self._indexed = True


def _score(record: KeyRecord) -> float:
    return NEVER if record.expires is None else record.expires


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
