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
    tat: float  # the new TAT if allowed
    retry_after_s: float  # when the same request would be admitted, if not allowed


@dataclass(frozen=True, slots=True)
class Gcra:
    """`per_minute` cells per minute, bursts up to `per_minute`."""

    name: str  # the limit's config name, for messages and metrics
    per_minute: int

    @property
    def interval_s(self) -> float:
        return WINDOW_S / self.per_minute

    def check(self, tat: float | None, now: float, cost: int) -> Verdict:
        start = now if tat is None or tat < now else tat
        new_tat = start + cost * self.interval_s
        over = new_tat - now - WINDOW_S
        if over > 0:
            return Verdict(False, start, over)
        return Verdict(True, new_tat, 0.0)

    def fits_ever(self, cost: int) -> bool:
        """False when `cost` exceeds a whole window: retrying can never help."""
        return cost <= self.per_minute


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
