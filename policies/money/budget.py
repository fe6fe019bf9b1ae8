"""Per-team spending budgets by UTC day and/or UTC month.

A request reserves its estimated cost before it goes upstream and is admitted only
if every budget window still has room for it; afterwards the reservation is settled
to the real cost (or refunded when no upstream answered). Windows are calendar
periods in UTC, so a budget resets at 00:00 UTC (daily) or on the 1st (monthly).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from annotated_types import Ge

from policies.money.pricing import MICROS_PER_USD

DAY = "usd_per_day"
MONTH = "usd_per_month"


@dataclass
class BudgetConfig:
    """`teams.<t>.budget`."""

    usd_per_day: Annotated[float, Ge(0.0)] | None = None
    usd_per_month: Annotated[float, Ge(0.0)] | None = None
    # downgrade: a tiered alias is served by its fast tier instead of refusing.
    on_exhausted: Literal["reject", "downgrade"] = "reject"

    def __post_init__(self) -> None:
        if self.usd_per_day is None and self.usd_per_month is None:
            raise ValueError("set usd_per_day and/or usd_per_month")


@dataclass(frozen=True, slots=True)
class Window:
    """One budget period: which budget, which period, its limit and when it ends."""

    name: str  # usd_per_day | usd_per_month
    period: str  # 2026-11-05 | 2026-11 (part of the store key)
    limit_micros: int
    resets_at: float  # epoch seconds of the period's end

    def describe(self) -> str:
        return "daily" if self.name == DAY else "monthly"

    def days(self) -> tuple[date, date]:
        """The first and last UTC day of the period."""
        if self.name == DAY:
            day = date.fromisoformat(self.period)
            return day, day
        first = date.fromisoformat(self.period + "-01")
        following = (first + timedelta(days=32)).replace(day=1)
        return first, following - timedelta(days=1)


def windows(config: BudgetConfig | None, now: float) -> tuple[Window, ...]:
    """The budget windows that contain `now`."""
    if config is None:
        return ()
    moment = datetime.fromtimestamp(now, UTC)
    found = []
    if config.usd_per_day is not None:
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        found.append(
            Window(
                DAY,
                day.strftime("%Y-%m-%d"),
                to_micros(config.usd_per_day),
                (day + timedelta(days=1)).timestamp(),
            )
        )
    if config.usd_per_month is not None:
        month = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (month + timedelta(days=32)).replace(day=1)
        found.append(
            Window(
                MONTH,
                month.strftime("%Y-%m"),
                to_micros(config.usd_per_month),
                following.timestamp(),
            )
        )
    return tuple(found)


def fits(spent_micros: int, cost_micros: int, window: Window) -> bool:
    return spent_micros + cost_micros <= window.limit_micros


def to_micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def usd(micros: int) -> float:
    return micros / MICROS_PER_USD
