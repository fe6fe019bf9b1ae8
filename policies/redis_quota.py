"""Rate-limit and budget counters in Redis, shared by every replica.

Each check is one Lua script run: Redis runs a script alone, so "is there room in
every limit? then charge them all" cannot interleave with another replica's check and
the limits never overshoot. Every key of a team carries the hash tag `{team}`, so a
script touches one Redis Cluster slot. Money is integer micro-dollars (INCRBY, exact).

Rate limits take the time from Redis itself (`TIME`, in the script): replicas with
skewed clocks, or a call delayed on its way (a reloaded script after SCRIPT FLUSH
costs a round trip), still see one clock that only moves forward in the order the
reservations run, so a burst admits exactly the limit and each refusal's wait is the
real one. TATs are integer microseconds (exact in Lua's doubles). A reservation that
met NOSCRIPT never ran: redis-py loads the script and runs it once, so it is counted
once. Budget periods (which day, which month) come from the caller's clock.

Keys (`P` = `limits.redis_prefix`):
  P{team}:gcra              hash: GCRA TAT (integer us) per limit name; expires when idle
  P{team}:budget:<period>   integer micro-dollars charged in that day or month
(`P{team}:rate`, the millisecond TATs of earlier versions, is not read; it expires.)
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
from policies.ratelimit import REQUESTS, SEARCH_UNITS, retry_seconds, to_us

T = TypeVar("T")
_SETTLE_MARGIN_S = 86_400  # budget keys outlive their period by a day, for late settles

# The time in integer microseconds: Redis's own clock, or ARGV's (tests' fake clocks).
# Scripts that call TIME then write are replicated by their effects (the default since
# Redis 5; replicate_commands() asks for it on older servers).
_NOW_LUA = """
local function now_us(given)
  if given ~= '' then return tonumber(given) end
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS: gcra hash, day budget, month budget.
# ARGV: now_us ('': Redis TIME), requests interval_us and window_us (0: none), units
#       interval_us and window_us (0: none), units, cost, day limit (-1: none), month
#       limit (-1: none), enforce budget (1/0), day ttl_s, month ttl_s.
# Returns {"ok"} | {"budget", name, spent} | {"rate", name, wait_us} where the wait is
# the longest over the limits that refuse: the time until all of them admit.
RESERVE_LUA = _NOW_LUA + f"""
local now = now_us(ARGV[1])
local units, cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local budgets = {{
  {{KEYS[2], tonumber(ARGV[8]), tonumber(ARGV[11]), '{DAY}'}},
  {{KEYS[3], tonumber(ARGV[9]), tonumber(ARGV[12]), '{MONTH}'}},
}}
if ARGV[10] == '1' then
  for _, b in ipairs(budgets) do
    if b[2] >= 0 then
      local spent = tonumber(redis.call('GET', b[1]) or '0')
      if spent + cost > b[2] then return {{'budget', b[4], tostring(spent)}} end
    end
  end
end
local cells = {{
  {{'{REQUESTS}', tonumber(ARGV[2]), tonumber(ARGV[3]), 1}},
  {{'{SEARCH_UNITS}', tonumber(ARGV[4]), tonumber(ARGV[5]), units}},
}}
local updates, latest, wait, waiting = {{}}, now, 0, nil
for _, c in ipairs(cells) do
  if c[2] > 0 and c[4] > 0 then
    local raw = redis.call('HGET', KEYS[1], c[1])
    local tat = raw and tonumber(raw) or now
    if tat < now then tat = now end
    local new = tat + c[2] * c[4]
    local over = new - now - c[3]
    if over > wait then wait, waiting = over, c[1] end
    updates[#updates + 1] = c[1]
    updates[#updates + 1] = string.format('%.0f', new)
    if new > latest then latest = new end
  end
end
if waiting then return {{'rate', waiting, string.format('%.0f', wait)}} end
if #updates > 0 then
  redis.call('HSET', KEYS[1], unpack(updates))
  local keep = math.ceil((latest - now) / 1000) + 1000
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

# KEYS: as RESERVE. ARGV: now_us ('': Redis TIME), units interval_us (0: none), units
# delta, cost delta, day used (1/0), month used (1/0). Keys that have expired are left alone.
ADJUST_LUA = _NOW_LUA + f"""
local interval = tonumber(ARGV[2])
local units, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
if interval > 0 and units ~= 0 then
  local raw = redis.call('HGET', KEYS[1], '{SEARCH_UNITS}')
  if raw then
    local now = now_us(ARGV[1])
    local tat = tonumber(raw) + interval * units
    redis.call('HSET', KEYS[1], '{SEARCH_UNITS}', string.format('%.0f', tat))
    local keep = math.ceil((tat - now) / 1000) + 1000
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
    """`server_time=False` takes rate-limit time from each request's `now` (the caller's
    clock) instead of Redis's: for tests on a fake clock, never for replicas."""

    def __init__(
        self, client: aioredis.Redis | RedisCluster, prefix: str, *, server_time: bool = True
    ) -> None:
        self.prefix = prefix
        self.server_time = server_time
        self._client = client
        self._reserve = client.register_script(RESERVE_LUA)
        self._adjust = client.register_script(ADJUST_LUA)

    def _keys(self, request: QuotaRequest) -> tuple[list[str], dict[str, Window]]:
        by_name = {w.name: w for w in request.windows}
        keys = [team_key(self.prefix, request.team, "gcra")]
        for name in (DAY, MONTH):
            window = by_name.get(name)
            period = window.period if window else f"unused-{name}"
            keys.append(team_key(self.prefix, request.team, f"budget:{period}"))
        return keys, by_name

    def _now(self, request: QuotaRequest) -> str:
        return "" if self.server_time else str(to_us(request.now))

    async def reserve(self, request: QuotaRequest) -> Refusal | None:
        keys, by_name = self._keys(request)
        requests, unit_rate = request.requests, request.unit_rate
        args: list[Any] = [
            self._now(request),
            *((requests.interval_us, requests.window_us) if requests else (0, 0)),
            *((unit_rate.interval_us, unit_rate.window_us) if unit_rate else (0, 0)),
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
        return Refusal(RATE_LIMIT, rest[0], retry_seconds(int(rest[1])))

    async def spent(self, team: str, windows: tuple[Window, ...]) -> dict[str, int]:
        if not windows:
            return {}
        keys = [team_key(self.prefix, team, f"budget:{w.period}") for w in windows]
        values = await guarded(lambda: self._client.mget(keys))
        return {w.name: int(float(v or 0)) for w, v in zip(windows, values, strict=True)}

    async def adjust(self, request: QuotaRequest, units_delta: int, cost_delta_micros: int) -> None:
        if not units_delta and not cost_delta_micros:
            return
        keys, by_name = self._keys(request)
        args = [
            self._now(request),
            request.unit_rate.interval_us if request.unit_rate else 0,
            units_delta,
            cost_delta_micros,
            *(1 if n in by_name else 0 for n in (DAY, MONTH)),
        ]
        await guarded(lambda: self._adjust(keys=keys, args=args))


def _ttl(window: Window | None, now: float) -> int:
    if window is None:
        return 0
    return math.ceil(window.resets_at - now) + _SETTLE_MARGIN_S


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
