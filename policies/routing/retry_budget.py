"""A retry budget: retries may add at most `ratio` of the requests, over a sliding window.

When everything is failing, unbounded retries multiply the load on upstreams that are
already down (a retry storm). Every retry, failover or hedge needs a token; a request's
first attempt never does. `min_per_s` keeps a few retries available at low traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Interval

from policies.routing.window import SlidingWindow

_REQUESTS, _RETRIES = 0, 1


@dataclass
class RetryBudgetSettings:
    ratio: Annotated[float, Interval(ge=0.0, le=1.0)] = 0.2
    min_per_s: Annotated[float, Ge(0.0)] = 1.0
    window_s: Annotated[float, Ge(0.1)] = 10.0


class RetryBudget:
    def __init__(self, settings: RetryBudgetSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._window = SlidingWindow(settings.window_s, 2, clock)

    def record_request(self) -> None:
        self._window.add(_REQUESTS)

    def try_acquire(self) -> bool:
        """Take a token for one more attempt; False when the budget is spent."""
        if self.available() < 1.0:
            return False
        self._window.add(_RETRIES)
        return True

    def available(self) -> float:
        requests, retries = self._window.totals()
        s = self.settings
        return s.ratio * requests + s.min_per_s * s.window_s - retries

    def snapshot(self) -> dict[str, float]:
        requests, retries = self._window.totals()
        return {"requests": requests, "retries": retries, "available": max(0.0, self.available())}
