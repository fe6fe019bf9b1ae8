"""Usage counters in Redis: one hash per team and UTC day, shared by every replica.

Key `<prefix>{team}:usage:<YYYY-MM-DD>`, fields `<model>|<deployment>|<counter>`.
One record is one Lua script run of HINCRBYs (integers: micro-dollars for money), so it
is counted whole or not at all, and exactly once, in one round trip. Buckets expire after
`limits.usage_retention_days`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from policies.money.redis_quota import guarded, team_key
from policies.money.usage import Slot

_SEP = "|"
# KEYS: the bucket. ARGV: ttl_s, then field, increment pairs. One script run: one round
# trip, and the record is applied whole or not at all.
ADD_LUA = """
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisUsageStore:
    def __init__(
        self, client: aioredis.Redis | RedisCluster, prefix: str, retention_days: int
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retention_s = retention_days * 86_400
        self._add = client.register_script(ADD_LUA)

    def key(self, team: str, day: str) -> str:
        return team_key(self.prefix, team, f"usage:{day}")

    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        args: list[str | int] = [self.retention_s]
        for name, value in counts.items():
            if value:
                args += [_SEP.join((model, deployment, name)), value]
        key = self.key(team, day)
        await guarded(lambda: self._add(keys=[key], args=args))

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.key(team, day))
        buckets = await guarded(pipe.execute)
        summed: dict[Slot, Counter[str]] = {}
        for bucket in buckets:
            for raw_field, raw_value in bucket.items():
                field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
                # Counter names have no separator; the model name is taken as it comes.
                model, deployment, name = field.rsplit(_SEP, 2)
                summed.setdefault((model, deployment), Counter())[name] += int(raw_value)
        return summed
