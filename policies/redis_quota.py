"""Rate-limit and budget counters in Redis, shared by every replica.

Each check is one Lua script run: Redis runs a script alone, so "is there room in
every limit? then charge them all" cannot interleave with another replica's check and
the limits never overshoot. Every key of a team carries the hash tag `{team}`, so a
script touches one Redis Cluster slot. Times are passed in by the caller (its clock)
in milliseconds; money is integer micro-dollars (INCRBY, exact).

Keys (`P` = `limits.redis_prefix`):
  P{team}:rate              hash: GCRA TAT (ms) per limit name; expires when idle
  P{team}:budget:<period>   integer micro-dollars charged in that day or month
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from policies.budget import DAY, MONTH, Window
from policies.quota import BUDGET, RATE_LIMIT, QuotaRequest, Refusal, StoreUnavailable
from policies.ratelimit import REQUESTS, SEARCH_UNITS, WINDOW_S

T = TypeVar("T")
_SETTLE_MARGIN_S = 86_400  # budget keys outlive their period by a day, for late settles

# KEYS: rate hash, day budget, month budget.
# ARGV: now_ms, window_ms, requests interval_ms (0: none), units interval_ms (0: none),
#       units, cost, day limit (-1: none), month limit (-1: none), enforce budget (1/0),
#       day ttl_s, month ttl_s.
# Returns {"ok"} | {"budget", name, spent} | {"rate", name, retry_after_ms}.
RESERVE_LUA = f"""
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local units, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
local budgets = {{
  {{KEYS[2], tonumber(ARGV[7]), tonumber(ARGV[10]), '{DAY}'}},
  {{KEYS[3], tonumber(ARGV[8]), tonumber(ARGV[11]), '{MONTH}'}},
}}
if ARGV[9] == '1' then
  for _, b in ipairs(budgets) do
    if b[2] >= 0 then
      local spent = tonumber(redis.call('GET', b[1]) or '0')
      if spent + cost > b[2] then return {{'budget', b[4], tostring(spent)}} end
    end
  end
end
local cells = {{
  {{'{REQUESTS}', tonumber(ARGV[3]), 1}},
  {{'{SEARCH_UNITS}', tonumber(ARGV[4]), units}},
}}
local updates, latest = {{}}, now
for _, c in ipairs(cells) do
  if c[2] > 0 and c[3] > 0 then
    local raw = redis.call('HGET', KEYS[1], c[1])
    local tat = raw and tonumber(raw) or now
    if tat < now then tat = now end
    local new = tat + c[2] * c[3]
    if new - now > window then
      return {{'rate', c[1], string.format('%.3f', new - now - window)}}
    end
    updates[#updates + 1] = c[1]
    updates[#updates + 1] = string.format('%.3f', new)
    if new > latest then latest = new end
  end
end
if #updates > 0 then
  redis.call('HSET', KEYS[1], unpack(updates))
  local keep = math.ceil(latest - now) + 1000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
for _, b in ipairs(budgets) do
  if b[2] >= 0 and cost ~= 0 then
    redis.call('INCRBY', b[1], cost)
    redis.call('EXPIRE', b[1], b[3])
  end
end
return {{'ok'}}
"""

# KEYS: as RESERVE. ARGV: now_ms, units interval_ms (0: none), units delta, cost delta,
# day used (1/0), month used (1/0). Keys that have expired are left alone.
ADJUST_LUA = f"""
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local units, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
if interval > 0 and units ~= 0 then
  local raw = redis.call('HGET', KEYS[1], '{SEARCH_UNITS}')
  if raw then
    local tat = tonumber(raw) + interval * units
    redis.call('HSET', KEYS[1], '{SEARCH_UNITS}', string.format('%.3f', tat))
    local keep = math.ceil(tat - now) + 1000
    if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
  end
end
if cost ~= 0 then
  for i = 2, 3 do
    if ARGV[3 + i] == '1' and redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('INCRBY', KEYS[i], cost)
    end
  end
end
return 1
"""


def team_key(prefix: str, team: str, suffix: str) -> str:
    """`<prefix>{team}:<suffix>`: the hash tag keeps a team's keys in one cluster slot."""
    return f"{prefix}{{{team}}}:{suffix}"


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call; any failure to get an answer becomes StoreUnavailable."""
    try:
        return await call()
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc


class RedisQuotaStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE_LUA)
        self._adjust = client.register_script(ADJUST_LUA)

    def _keys(self, request: QuotaRequest) -> tuple[list[str], dict[str, Window]]:
        by_name = {w.name: w for w in request.windows}
        keys = [team_key(self.prefix, request.team, "rate")]
        for name in (DAY, MONTH):
            window = by_name.get(name)
            period = window.period if window else f"unused-{name}"
            keys.append(team_key(self.prefix, request.team, f"budget:{period}"))
        return keys, by_name

    async def reserve(self, request: QuotaRequest) -> Refusal | None:
        keys, by_name = self._keys(request)
        args: list[Any] = [
            _ms(request.now),
            _ms(WINDOW_S),
            _ms(request.requests.interval_s) if request.requests else 0,
            _ms(request.unit_rate.interval_s) if request.unit_rate else 0,
            request.units,
            request.cost_micros,
            *(by_name[n].limit_micros if n in by_name else -1 for n in (DAY, MONTH)),
            1 if request.enforce_budget else 0,
            *(_ttl(by_name.get(n), request.now) for n in (DAY, MONTH)),
        ]
        reply = await guarded(lambda: self._reserve(keys=keys, args=args))
        verdict, *rest = (_text(part) for part in reply)
        if verdict == "ok":
            return None
        if verdict == "budget":
            window = by_name[rest[0]]
            spent = int(float(rest[1]))
            return Refusal(BUDGET, window.name, window.resets_at - request.now, spent, window)
        return Refusal(RATE_LIMIT, rest[0], float(rest[1]) / 1000.0)

    async def adjust(self, request: QuotaRequest, units_delta: int, cost_delta_micros: int) -> None:
        if not units_delta and not cost_delta_micros:
            return
        keys, by_name = self._keys(request)
        args = [
            _ms(request.now),
            _ms(request.unit_rate.interval_s) if request.unit_rate else 0,
            units_delta,
            cost_delta_micros,
            *(1 if n in by_name else 0 for n in (DAY, MONTH)),
        ]
        await guarded(lambda: self._adjust(keys=keys, args=args))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.3f}"


def _ttl(window: Window | None, now: float) -> int:
    if window is None:
        return 0
    return math.ceil(window.resets_at - now) + _SETTLE_MARGIN_S


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
