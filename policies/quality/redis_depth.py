"""Depth counters in Redis: every replica's counts merged, so the advice is the fleet's.

Keys (`P` = `depth.redis_prefix`; the hash tag `{team}` keeps a team's keys in one
Redis Cluster slot, as in `policies.money.redis_quota`):

  P{team}:depth:<model>:<bucket>    hash: the counters of one time bucket (see
                                    `policies.quality.depth`), `t0` its first write; expires
                                    one window after its last write
  P{team}:depth:models              set: the models with counters (expires likewise)
  P{team}:depth:reverted:<model>    enforcement switched back to advise (expires)

A flush is one Lua script run per team and model (HINCRBYs, HSETNX of `t0`, the expiry
and the model's name), so a replica's counts land whole or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.money.redis_quota import guarded, team_key
from policies.quality.depth_store import FIRST

# KEYS: the bucket, the models set. ARGV: ttl_s, model, now, then field, increment pairs.
ADD_LUA = """
redis.call('HSETNX', KEYS[1], 't0', ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class RedisDepthStore:
    scope = "fleet (Redis)"

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str, window_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = max(1, int(window_s) + 1)
        self._add = client.register_script(ADD_LUA)

    def _key(self, team: str, suffix: str) -> str:
        return team_key(self.prefix, team, f"depth:{suffix}")

    async def add(
        self, team: str, model: str, bucket: int, counts: Mapping[str, int], now: float
    ) -> None:
        args: list[str | int] = [self.ttl_s, model, int(now)]
        for name, value in counts.items():
            if value:
                args += [name, value]
        keys = [self._key(team, f"{model}:{bucket}"), self._key(team, "models")]
        await guarded(lambda: self._add(keys=keys, args=args))

    async def read(
        self, team: str, model: str, buckets: Sequence[int]
    ) -> tuple[Counter[str], float | None]:
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self._key(team, f"{model}:{bucket}"))
        found = await guarded(pipe.execute)
        summed: Counter[str] = Counter()
        first: float | None = None
        for bucket in found:
            for raw_name, raw_value in bucket.items():
                name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
                if name == FIRST:
                    start = float(raw_value)
                    first = start if first is None else min(first, start)
                else:
                    summed[name] += int(raw_value)
        return summed, first

    async def models(self, team: str) -> set[str]:
        found = await guarded(lambda: self.client.smembers(self._key(team, "models")))
        return {m.decode() if isinstance(m, bytes) else m for m in found}

    async def revert(self, team: str, model: str, ttl_s: float) -> bool:
        key = self._key(team, f"reverted:{model}")
        ttl = max(1, int(ttl_s))
        return bool(await guarded(lambda: self.client.set(key, 1, nx=True, ex=ttl)))

    async def reverted(self, team: str, model: str) -> bool:
        key = self._key(team, f"reverted:{model}")
        return bool(await guarded(lambda: self.client.exists(key)))
