"""Usage accounting: what each team used, per model and deployment, in daily buckets.

A bucket holds integer counters (money in micro-dollars) per (model, deployment);
events without a deployment (rejections, truncations) use deployment "". Reports sum
the buckets of a date range. `MemoryUsageStore` is per process; the Redis one
(`policies.redis_usage`) is shared by replicas and read by `rerank-gateway usage`.

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

from policies.budget import usd

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
FIELDS = (
    REQUESTS,
    DOCUMENTS,
    SEARCH_UNITS,
    TOKENS,
    COST,
    SAVED_UNITS,
    SAVED_TOKENS,
    SAVED_COST,
    REJECTED_LIMITS,
    REJECTED_RATE,
    REJECTED_BUDGET,
    TRUNCATED,
    DOWNGRADED,
)
MAX_REPORT_DAYS = 400
# The figure a request's price billed it by, per price kind (`policies.pricing.KINDS`);
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


async def collect(
    store: UsageStore, teams: Sequence[str], first: date, last: date
) -> dict[str, Any]:
    """The JSON report of `teams` over [first, last]: one row per team/model/deployment."""
    days = days_between(first, last)
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for team in teams:
        slots = await store.read(team, days)
        team_total: Counter[str] = Counter()
        for (model, deployment), counts in sorted(slots.items()):
            rows.append({"team": team, "model": model, "deployment": deployment or None})
            rows[-1].update(_figures(counts))
            rows[-1].update(_billed(counts))
            team_total.update(counts)
        if slots:
            totals[team] = _figures(team_total)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "currency": "USD",
        "rows": rows,
        "totals": totals,
    }


def _billed(counts: Mapping[str, int]) -> dict[str, Any]:
    """The row's price kind and the figure it was billed by (`mixed` if the price changed)."""
    kinds = [kind for kind in BILLED_KINDS if counts.get(billed_counter(kind), 0)]
    if not kinds:
        return {"unit": None, "billed_units": 0}
    if len(kinds) > 1:
        return {"unit": "mixed", "billed_units": None}
    kind = kinds[0]
    return {"unit": kind, "billed_units": 0 if kind == "free" else counts[billed_counter(kind)]}


def _figures(counts: Mapping[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = counts.get(name, 0)
        if name == COST:
            out["cost_usd"] = round(usd(value), 6)
        elif name == SAVED_COST:
            out["saved_cost_usd"] = round(usd(value), 6)
        else:
            out[name] = value
    return out
