"""Attempts per key limited per minute (policies.access.throttle) with the state in Redis, so
every replica counts against one limit.

Key: `<prefix>{throttle:<name>:<key>}`, the key's TAT in integer microseconds, expiring
once the bucket is full again. One script run per check: Redis runs it alone, so
concurrent attempts on several replicas never exceed the limit. The time is Redis's own
(`TIME`), as for the team rate limits (policies.money.redis_quota).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.money.ratelimit import US, Gcra
from policies.money.redis_quota import NOW_LUA, guarded

# KEYS: the TAT. ARGV: now_us ('': Redis TIME), interval_us, window_us, take (1/0).
# Returns the wait in microseconds ('0': the attempt fits, and was counted if take).
THROTTLE_LUA = NOW_LUA + """
local now = now_us(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + tonumber(ARGV[2])
local wait = new - now - tonumber(ARGV[3])
if wait > 0 then return string.format('%.0f', wait) end
if ARGV[4] == '1' then
  local keep = math.ceil((new - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', keep)
end
return '0'
"""


class RedisThrottle:
    def __init__(
        self, client: aioredis.Redis | RedisCluster, prefix: str, name: str, per_minute: int
    ) -> None:
        self.gcra = Gcra(name, per_minute)
        self.prefix = f"{prefix}{{throttle:{name}:"
        self._script = client.register_script(THROTTLE_LUA)

    async def wait(self, key: str) -> float:
        return await self._run(key, take=False)

    async def take(self, key: str) -> float:
        return await self._run(key, take=True)

    async def _run(self, key: str, take: bool) -> float:
        args: list[str | int] = ["", self.gcra.interval_us, self.gcra.window_us, int(take)]
        keys = [f"{self.prefix}{key}}}"]
        return int(await guarded(lambda: self._script(keys=keys, args=args))) / US
