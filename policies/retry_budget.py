"""A retry budget: retries may add at most `ratio` of the requests, over a sliding window.

When everything is failing, unbounded retries multiply the load on upstreams that are
already down (a retry storm). Every retry, failover or hedge needs a token; a request's
first attempt never does. `min_per_s` keeps a few retries available at low traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from policies.window import SlidingWindow

_REQUESTS, _RETRIES = 0, 1


@dataclass
class RetryBudgetSettings:
    ratio: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    min_per_s: float = field(default=1.0, metadata={"min": 0.0})
    window_s: float = field(default=10.0, metadata={"min": 0.1})


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
