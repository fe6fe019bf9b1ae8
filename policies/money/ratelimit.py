"""Per-team rate limits: requests and search units per minute, by GCRA.

GCRA (the generic cell rate algorithm) keeps one number per limit, the theoretical
arrival time (TAT): when the team's bucket would be empty again. A request of cost n
moves it n emission intervals later; it is admitted when that stays within one
window (a minute) of now. So a team may burst a whole minute's allowance after a
quiet spell, then gets the steady rate. The same arithmetic runs in the memory store
here and in the Redis store's Lua script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

WINDOW_S = 60.0
US = 1_000_000
WINDOW_US = 60 * US
REQUESTS = "requests_per_minute"
SEARCH_UNITS = "search_units_per_minute"


@dataclass
class RateLimitConfig:
    """`teams.<t>.rate_limit`."""

    requests_per_minute: Annotated[int, Ge(1)] | None = None
    search_units_per_minute: Annotated[int, Ge(1)] | None = None

    def __post_init__(self) -> None:
        if self.requests_per_minute is None and self.search_units_per_minute is None:
            raise ValueError("set requests_per_minute and/or search_units_per_minute")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    tat_us: int  # the new TAT if allowed
    wait_us: int  # until the same request would be admitted, if not allowed (> 0)


@dataclass(frozen=True, slots=True)
class Gcra:
    """`per_minute` cells per minute, bursts up to `per_minute`.

    Times are whole microseconds and the emission interval is rounded down to one, so
    the arithmetic is exact in integers, here and in Lua (whose doubles hold integers to
    2**53, i.e. epoch microseconds until the year 2255): a burst admits exactly
    `per_minute` cells, never one fewer to a rounding error.
    """

    name: str  # the limit's config name, for messages and metrics
    per_minute: int

    @property
    def interval_us(self) -> int:
        return max(1, WINDOW_US // self.per_minute)

    @property
    def window_us(self) -> int:
        """The burst tolerance: `per_minute` intervals (60 s, less the rounding)."""
        return self.interval_us * self.per_minute

    def check(self, tat_us: int | None, now_us: int, cost: int) -> Verdict:
        start = now_us if tat_us is None or tat_us < now_us else tat_us
        new_tat = start + cost * self.interval_us
        wait = new_tat - now_us - self.window_us
        if wait > 0:
            return Verdict(False, start, wait)
        return Verdict(True, new_tat, 0)

    def fits_ever(self, cost: int) -> bool:
        """False when `cost` exceeds a whole window: retrying can never help."""
        return cost <= self.per_minute


def to_us(seconds: float) -> int:
    return round(seconds * US)


def retry_seconds(wait_us: int) -> float:
    """A wait as Retry-After says it: whole seconds, rounded up (never 0)."""
    return float(max(1, -(-wait_us // US)))


def limiters(config: RateLimitConfig | None) -> tuple[Gcra | None, Gcra | None]:
    """(requests limiter, search-units limiter) of a team's config."""
    if config is None:
        return None, None
    requests = Gcra(REQUESTS, config.requests_per_minute) if config.requests_per_minute else None
    units = (
        Gcra(SEARCH_UNITS, config.search_units_per_minute)
        if config.search_units_per_minute
        else None
    )
    return requests, units
