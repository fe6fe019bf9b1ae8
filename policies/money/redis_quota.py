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

Budget counters that survive losing Redis: each period's spend is a hash (`m` the
micro-dollars, `g` the counter's incarnation). A reservation remembers the incarnation it
was charged to (`Hold`); its settlement moves `m` by the difference only in that same
incarnation. When the counter is gone (FLUSHALL, a restart without persistence, a failover
that lost writes and was told to forget), a ledger-backed gateway does not start again at
zero: reserve refuses with `rebuild` until one replica has seeded the counter from the
ledger (`finish_rebuild`, under the `rebuilding` lock). Settlements that find the counter
gone meanwhile are kept by event id in the period's `late` hash; the rebuild adds those the
ledger did not count yet. A settlement that finds a newer incarnation adds its whole cost
(the rebuilt counter never held its reservation). The `kept` marker says the team's
counters have been kept by this Redis; without it a missing counter means loss, with it,
a new period.

Keys (`P` = `limits.redis_prefix`):
  P{team}:gcra                   hash: GCRA TAT (integer us) per limit name; expires when idle
  P{team}:spend:<period>         hash: m (micro-dollars charged), g (incarnation)
  P{team}:spend:<period>:late    hash: event id -> micro-dollars settled while it was gone
  P{team}:kept                   marker: this Redis has kept the team's spend
  P{team}:rebuilding             lock of the replica seeding the team's spend
(`P{team}:budget:<period>`, the string counters of earlier versions, seed a new period's
counter once and then expire; `P{team}:rate` is not read.)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from policies.money.budget import DAY, MONTH, Window
from policies.money.quota import (
    BUDGET,
    RATE_LIMIT,
    REBUILD,
    Hold,
    QuotaRequest,
    Refusal,
    Settlement,
    StoreUnavailable,
)
from policies.money.ratelimit import REQUESTS, SEARCH_UNITS, retry_seconds, to_us

T = TypeVar("T")
_SETTLE_MARGIN_S = 86_400  # budget keys outlive their period by a day, for late settles
_KEPT_TTL_S = 40 * 86_400  # the kept marker outlives any period; refreshed at each new one
_REBUILD_LOCK_S = 30.0

# The time in integer microseconds: Redis's own clock, or ARGV's (tests' fake clocks).
# Scripts that call TIME then write are replicated by their effects (the default since
# Redis 5; replicate_commands() asks for it on older servers).
NOW_LUA = """
local function now_us(given)
  if given ~= '' then return tonumber(given) end
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS: gcra hash, day spend, month spend, kept marker, legacy day and month counters.
# ARGV: now_us ('': Redis TIME), requests interval_us and window_us (0: none), units
#       interval_us and window_us (0: none), units, cost, day limit (-1: none), month
#       limit (-1: none), enforce budget (1/0), day ttl_s, month ttl_s, rebuild missing
#       (1/0), the incarnation to give a counter this creates.
# Returns {"ok", day incarnation, month incarnation} | {"budget", name, spent} |
# {"rate", name, wait_us} (the longest wait over the limits that refuse) | {"rebuild", name}.
RESERVE_LUA = NOW_LUA + f"""
local now = now_us(ARGV[1])
local units, cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local budgets = {{
  {{KEYS[2], tonumber(ARGV[8]), tonumber(ARGV[11]), '{DAY}', KEYS[5]}},
  {{KEYS[3], tonumber(ARGV[9]), tonumber(ARGV[12]), '{MONTH}', KEYS[6]}},
}}
local kept = redis.call('EXISTS', KEYS[4]) == 1
if ARGV[13] == '1' and not kept then
  for _, b in ipairs(budgets) do
    if b[2] >= 0 and redis.call('EXISTS', b[1]) == 0 then return {{'rebuild', b[4]}} end
  end
end
if ARGV[10] == '1' then
  for _, b in ipairs(budgets) do
    if b[2] >= 0 then
      local spent = tonumber(redis.call('HGET', b[1], 'm') or '0')
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
local gens = {{'', ''}}
for i, b in ipairs(budgets) do
  if b[2] >= 0 then
    if redis.call('HSETNX', b[1], 'g', ARGV[14]) == 1 then
      redis.call('HSET', b[1], 'm', redis.call('GET', b[5]) or '0')
      redis.call('EXPIRE', b[1], b[3])
      if ARGV[13] == '1' then redis.call('SET', KEYS[4], '1', 'EX', {_KEPT_TTL_S}) end
    end
    if cost ~= 0 then redis.call('HINCRBY', b[1], 'm', cost) end
    gens[i] = redis.call('HGET', b[1], 'g')
  end
end
if ARGV[13] == '1' and not kept then redis.call('SET', KEYS[4], '1', 'EX', {_KEPT_TTL_S}) end
return {{'ok', gens[1], gens[2]}}
"""

# KEYS: gcra hash, day spend, month spend, day late, month late.
# ARGV: now_us ('': Redis TIME), units interval_us (0: none), units delta, cost delta,
#       settled cost (0: a refund), day incarnation, month incarnation, day used (1/0),
#       month used (1/0), event id ('': none), late ttl_s.
# Same incarnation: move by the delta. A newer one (rebuilt since): add the settled cost.
# None (lost): keep the settled cost under the event id, for the rebuild.
ADJUST_LUA = NOW_LUA + f"""
local interval = tonumber(ARGV[2])
local units, cost, settled = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
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
for i = 1, 2 do
  if ARGV[7 + i] == '1' then
    local key = KEYS[1 + i]
    if redis.call('EXISTS', key) == 1 then
      if redis.call('HGET', key, 'g') == ARGV[5 + i] then
        if cost ~= 0 then redis.call('HINCRBY', key, 'm', cost) end
      elseif settled ~= 0 then
        redis.call('HINCRBY', key, 'm', settled)
      end
    elseif ARGV[10] ~= '' and settled ~= 0 then
      redis.call('HSET', KEYS[3 + i], ARGV[10], settled)
      redis.call('EXPIRE', KEYS[3 + i], tonumber(ARGV[11]))
    end
  end
end
return 1
"""

# KEYS: day spend, month spend, day late, month late, kept marker.
# ARGV: incarnation, day spent, month spent (from the ledger), day ttl_s, month ttl_s,
#       day used (1/0), month used (1/0).
# Seeds each used counter with the ledger's figure plus what settled while it was gone,
# as a new incarnation, and returns those late settlements {day pairs, month pairs}.
FINISH_REBUILD_LUA = f"""
local out = {{{{}}, {{}}}}
for i = 1, 2 do
  if ARGV[5 + i] == '1' then
    local late = redis.call('HGETALL', KEYS[2 + i])
    local total = tonumber(ARGV[1 + i])
    for j = 2, #late, 2 do total = total + tonumber(late[j]) end
    redis.call('DEL', KEYS[i], KEYS[2 + i])
    redis.call('HSET', KEYS[i], 'm', string.format('%.0f', total), 'g', ARGV[1])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 + i]))
    out[i] = late
  end
end
redis.call('SET', KEYS[5], '1', 'EX', {_KEPT_TTL_S})
return out
"""

# KEYS: day spend, month spend. ARGV: incarnation, day delta, month delta.
CORRECT_LUA = """
for i = 1, 2 do
  if ARGV[1 + i] ~= '0' and redis.call('HGET', KEYS[i], 'g') == ARGV[1] then
    redis.call('HINCRBY', KEYS[i], 'm', ARGV[1 + i])
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
        self._finish = client.register_script(FINISH_REBUILD_LUA)
        self._correct = client.register_script(CORRECT_LUA)

    def _key(self, team: str, suffix: str) -> str:
        return team_key(self.prefix, team, suffix)

    def _spend_keys(self, team: str, windows: tuple[Window, ...], suffix: str = "") -> list[str]:
        """The day and month spend keys (a placeholder for a window the team has not)."""
        by_name = {w.name: w for w in windows}
        keys = []
        for name in (DAY, MONTH):
            window = by_name.get(name)
            period = window.period if window else f"unused-{name}"
            keys.append(self._key(team, f"spend:{period}{suffix}"))
        return keys

    def _legacy_keys(self, team: str, windows: tuple[Window, ...]) -> list[str]:
        by_name = {w.name: w for w in windows}
        return [
            self._key(team, f"budget:{by_name[n].period if n in by_name else 'unused-' + n}")
            for n in (DAY, MONTH)
        ]

    def _now(self, request: QuotaRequest) -> str:
        return "" if self.server_time else str(to_us(request.now))

    async def reserve(self, request: QuotaRequest) -> Refusal | Hold:
        team, windows = request.team, request.windows
        keys = [
            self._key(team, "gcra"),
            *self._spend_keys(team, windows),
            self._key(team, "kept"),
            *self._legacy_keys(team, windows),
        ]
        by_name = {w.name: w for w in windows}
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
            1 if request.rebuild_missing else 0,
            new_incarnation(),
        ]
        reply = await guarded(lambda: self._reserve(keys=keys, args=args))
        verdict, *rest = (_text(part) for part in reply)
        if verdict == "ok":
            return Hold(tuple(rest))
        if verdict == REBUILD:
            return Refusal(REBUILD, rest[0], 0.0)
        if verdict == "budget":
            window = by_name[rest[0]]
            spent = int(float(rest[1]))
            return Refusal(BUDGET, window.name, window.resets_at - request.now, spent, window)
        return Refusal(RATE_LIMIT, rest[0], retry_seconds(int(rest[1])))

    async def spent(self, team: str, windows: tuple[Window, ...]) -> dict[str, int]:
        if not windows:
            return {}
        keys = [self._key(team, f"spend:{w.period}") for w in windows]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "m")
        values = await guarded(pipe.execute)
        return {w.name: int(float(v or 0)) for w, v in zip(windows, values, strict=True)}

    async def adjust(
        self,
        request: QuotaRequest,
        hold: Hold,
        units_delta: int,
        cost_delta_micros: int,
        settled: Settlement | None = None,
    ) -> None:
        if not units_delta and not cost_delta_micros and not (settled and settled.cost_micros):
            return
        team, windows = request.team, request.windows
        keys = [
            self._key(team, "gcra"),
            *self._spend_keys(team, windows),
            *self._spend_keys(team, windows, ":late"),
        ]
        names = {w.name for w in windows}
        generations = hold.generations or ("", "")
        args = [
            self._now(request),
            request.unit_rate.interval_us if request.unit_rate else 0,
            units_delta,
            cost_delta_micros,
            settled.cost_micros if settled else 0,
            *generations,
            *(1 if n in names else 0 for n in (DAY, MONTH)),
            settled.event_id.hex() if settled else "",
            max((_ttl(w, request.now) for w in windows), default=_SETTLE_MARGIN_S),
        ]
        await guarded(lambda: self._adjust(keys=keys, args=args))

    # ---------------------------------------------------------------- rebuilds

    async def lock_rebuild(self, team: str, token: str, ttl_s: float = _REBUILD_LOCK_S) -> bool:
        """Take the team's rebuild lock (one replica seeds its counters at a time)."""
        key = self._key(team, "rebuilding")
        ttl_ms = int(ttl_s * 1000)
        return bool(await guarded(lambda: self._client.set(key, token, nx=True, px=ttl_ms)))

    async def unlock_rebuild(self, team: str, token: str) -> None:
        key = self._key(team, "rebuilding")
        found = await guarded(lambda: self._client.get(key))
        if found is not None and _text(found) == token:
            await guarded(lambda: self._client.delete(key))

    async def finish_rebuild(
        self, team: str, spent: dict[Window, int], incarnation: str, now: float
    ) -> dict[Window, dict[bytes, int]]:
        """Seed the team's counters with the ledger's `spent` plus the settlements kept while
        they were gone; returns those late settlements (event id -> micro-dollars)."""
        windows = tuple(spent)
        by_name = {w.name: w for w in windows}
        keys = [
            *self._spend_keys(team, windows),
            *self._spend_keys(team, windows, ":late"),
            self._key(team, "kept"),
        ]
        args = [
            incarnation,
            *(spent[by_name[n]] if n in by_name else 0 for n in (DAY, MONTH)),
            *(_ttl(by_name.get(n), now) for n in (DAY, MONTH)),
            *(1 if n in by_name else 0 for n in (DAY, MONTH)),
        ]
        reply = await guarded(lambda: self._finish(keys=keys, args=args))
        late: dict[Window, dict[bytes, int]] = {}
        for name, pairs in zip((DAY, MONTH), reply, strict=True):
            if name in by_name:
                items = [_text(p) for p in pairs]
                late[by_name[name]] = {
                    bytes.fromhex(items[i]): int(items[i + 1]) for i in range(0, len(items), 2)
                }
        return late

    async def correct(self, team: str, incarnation: str, deltas: dict[Window, int]) -> None:
        """Move the counters of `incarnation` by `deltas` (late settlements the ledger had)."""
        windows = tuple(deltas)
        by_name = {w.name: w for w in windows}
        args: list[str | int] = [
            incarnation,
            *(deltas[by_name[n]] if n in by_name else 0 for n in (DAY, MONTH)),
        ]
        keys = self._spend_keys(team, windows)
        await guarded(lambda: self._correct(keys=keys, args=args))

    async def forget(self, team: str, windows: tuple[Window, ...]) -> None:
        """Drop the team's counters and kept marker: the next reservation rebuilds them (after
        a failover that may have lost writes, or a restore of an old snapshot)."""
        keys = [self._key(team, "kept"), *self._spend_keys(team, windows)]
        await guarded(lambda: self._client.delete(*keys))


def new_incarnation() -> str:
    return uuid.uuid4().hex[:16]


def _ttl(window: Window | None, now: float) -> int:
    if window is None:
        return 0
    return math.ceil(window.resets_at - now) + _SETTLE_MARGIN_S


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
