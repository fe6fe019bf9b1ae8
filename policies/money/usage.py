"""Usage accounting: what each team used, per model and deployment, in daily buckets.

A bucket holds integer counters (money in micro-dollars) per (model, deployment);
events without a deployment (rejections, truncations) use deployment "". Reports sum
the buckets of a date range. `MemoryUsageStore` is per process; the Redis one
(`policies.money.redis_usage`) is shared by replicas and read by `rerank-gateway usage`.

Every served request counts its search units and tokens (each the upstream's figure, or
the gateway's estimate where it gives none) and, in a `billed_<kind>` counter, the figure
its price bills by. A report row states that kind as `unit` and the figure as
`billed_units`: `search_units`, `tokens`, `request` (flat: the upstream calls) or `free`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from policies.money.budget import usd

REQUESTS = "requests"
DOCUMENTS = "documents"
SEARCH_UNITS = "search_units"
TOKENS = "tokens"
COST = "cost_micros"
SAVED_UNITS = "saved_search_units"
SAVED_TOKENS = "saved_tokens"
SAVED_COST = "saved_cost_micros"
REJECTED_LIMITS = "rejected_limits"  # over-fetch limits (reject)
REJECTED_RATE = "rejected_rate_limit"
REJECTED_BUDGET = "rejected_budget"
TRUNCATED = "truncated"  # over-fetch limits (truncate)
DOWNGRADED = "downgraded"  # budget exhausted, served by the fast tier
CACHE_HITS = "cache_hits"  # documents answered without this request's own upstream call
# Served requests billed as a call but answered with scores another team's call paid for
# (teams that hide cross-team cache hits): part of `requests` and `cost`, no upstream call.
REPLAYED_COUNTER = "replayed"
REPLAYED_COST = "replayed_cost_micros"
FIELDS = (
    REQUESTS,
    DOCUMENTS,
    SEARCH_UNITS,
    TOKENS,
    COST,
    SAVED_UNITS,
    SAVED_TOKENS,
    SAVED_COST,
    CACHE_HITS,
    REPLAYED_COUNTER,
    REPLAYED_COST,
    REJECTED_LIMITS,
    REJECTED_RATE,
    REJECTED_BUDGET,
    TRUNCATED,
    DOWNGRADED,
)
GROUPS = ("team", "key", "model", "deployment")  # what a report's rows may be grouped by
DEFAULT_GROUPS = ("team", "model", "deployment")
MAX_REPORT_DAYS = 400
# The figure a request's price billed it by, per price kind (`policies.money.pricing.KINDS`);
# a free request counts 1 in `billed_free`.
BILLED_KINDS = ("search_units", "tokens", "request", "free")


def billed_counter(kind: str) -> str:
    return f"billed_{kind}"

Slot = tuple[str, str]  # (model, deployment)


class UsageStore(Protocol):
    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        """Add `counts` to the team's bucket of `day` (YYYY-MM-DD)."""
        ...

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        """The team's counters summed over `days`, per (model, deployment)."""
        ...


class MemoryUsageStore:
    def __init__(self, retention_days: int = MAX_REPORT_DAYS) -> None:
        self.retention = timedelta(days=retention_days)
        self._buckets: dict[tuple[str, str], dict[Slot, Counter[str]]] = {}

    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        bucket = self._buckets.get((team, day))
        if bucket is None:  # a new day: drop the buckets past retention, as Redis expires them
            cutoff = (date.fromisoformat(day) - self.retention).isoformat()
            for old in [k for k in self._buckets if k[1] <= cutoff]:
                del self._buckets[old]
            bucket = self._buckets[team, day] = {}
        bucket.setdefault((model, deployment), Counter()).update(counts)

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        summed: dict[Slot, Counter[str]] = {}
        for day in days:
            for slot, counts in self._buckets.get((team, day), {}).items():
                summed.setdefault(slot, Counter()).update(counts)
        return summed


def day_of(now: float) -> str:
    """The UTC day of a Unix time, as YYYY-MM-DD (Unix days are exactly 86,400 s)."""
    return _day_name(int(now // 86_400))


@functools.lru_cache(maxsize=8)
def _day_name(day: int) -> str:
    # Called on every answered request: formatting once per day keeps it off the hot path.
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


def parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD (got {value!r})") from None


def report_range(start: str | None, end: str | None, now: float) -> tuple[date, date]:
    """The (from, to) of a report: default from the 1st of the month to today (UTC)."""
    last = parse_day(end, "to") if end else datetime.fromtimestamp(now, UTC).date()
    first = parse_day(start, "from") if start else last.replace(day=1)
    if first > last:
        raise ValueError(f"from ({first}) is after to ({last})")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise ValueError(f"a report covers at most {MAX_REPORT_DAYS} days")
    return first, last


def days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def month_range(month: str) -> tuple[date, date]:
    """The first and last day of `YYYY-MM`."""
    try:
        first = date.fromisoformat(month + "-01")
    except ValueError:
        raise ValueError(f"month must be YYYY-MM (got {month!r})") from None
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def parse_groups(value: str | None) -> tuple[str, ...]:
    """`team,model` -> ("team", "model"); None: the default grouping."""
    if not value:
        return DEFAULT_GROUPS
    groups = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups or len(set(groups)) != len(groups):
        raise ValueError(f"group by one or more of {', '.join(GROUPS)}, each once (got {value!r})")
    return groups


Group = tuple[dict[str, str | None], Mapping[str, int]]  # (dimensions, counters) of a row


def build_report(groups: Sequence[Group], first: date, last: date) -> dict[str, Any]:
    """The JSON report: one row per group with its figures, and totals per team (or
    `all`, when the rows are not grouped by team)."""
    rows: list[dict[str, Any]] = []
    totals: dict[str, Counter[str]] = {}
    for dims, counts in groups:
        rows.append({**dims, **_figures(counts), **_billed(counts)})
        totals.setdefault(dims.get("team") or "all", Counter()).update(counts)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "currency": "USD",
        "rows": rows,
        "totals": {team: _figures(counts) for team, counts in totals.items()},
    }


async def store_groups(
    store: UsageStore, teams: Sequence[str], first: date, last: date, by: Sequence[str]
) -> list[Group]:
    """The rows of a counter store (which keeps no key ids) over [first, last], by `by`."""
    if "key" in by:
        raise ValueError("grouping by key needs the usage ledger (ledger: in the config)")
    days = days_between(first, last)
    merged: dict[tuple[str | None, ...], Counter[str]] = {}
    for team in teams:
        for (model, deployment), counts in (await store.read(team, days)).items():
            values = {"team": team, "model": model, "deployment": deployment or None}
            merged.setdefault(tuple(values[g] for g in by), Counter()).update(counts)
    return [
        (dict(zip(by, dims, strict=True)), counts)
        for dims, counts in sorted(merged.items(), key=lambda item: [v or "" for v in item[0]])
    ]


async def collect(
    store: UsageStore, teams: Sequence[str], first: date, last: date
) -> dict[str, Any]:
    """The JSON report of `teams` over [first, last]: one row per team/model/deployment."""
    return build_report(await store_groups(store, teams, first, last, DEFAULT_GROUPS), first, last)


def _billed(counts: Mapping[str, int]) -> dict[str, Any]:
    """The row's price kind and the figure it was billed by (`mixed` if the price changed)."""
    kinds = [kind for kind in BILLED_KINDS if counts.get(billed_counter(kind), 0)]
    if not kinds:
        return {"unit": None, "billed_units": 0}
    if len(kinds) > 1:
        return {"unit": "mixed", "billed_units": None}
    kind = kinds[0]
    return {"unit": kind, "billed_units": 0 if kind == "free" else counts[billed_counter(kind)]}


# Money is counted in micro-dollars and reported in dollars, under these names.
_IN_USD = {COST: "cost_usd", SAVED_COST: "saved_cost_usd", REPLAYED_COST: "replayed_cost_usd"}
REPORT_FIGURES = tuple(_IN_USD.get(name, name) for name in FIELDS)  # a report row's figures


def _figures(counts: Mapping[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = counts.get(name, 0)
        if name in _IN_USD:
            out[_IN_USD[name]] = round(usd(value), 6)
        else:
            out[name] = value
    return out
