"""A circuit breaker per deployment: stop sending traffic where it keeps failing.

closed -> open: after `failures` failures in a row, or an error rate of at least
`error_rate` over `min_calls` or more calls in the last `window_s` seconds.
open -> half-open: after `cooldown_s`; up to `probes` requests are let through.
half-open -> closed after `probes` successful probes; -> open again on a failed probe.

Only failures that are the deployment's fault (retryable: connection, timeout, 429,
5xx) are recorded as failures; the gateway releases the permit of anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Interval

from policies.routing.window import SlidingWindow

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}
NOT_A_PROBE = 0  # the permit of a call let through while closed
_CALLS, _FAILURES = 0, 1


@dataclass
class BreakerSettings:
    failures: Annotated[int, Ge(1)] = 5  # consecutive failures that open it
    error_rate: Annotated[float, Interval(ge=0.01, le=1.0)] = 0.5
    min_calls: Annotated[int, Ge(1)] = 20  # before error_rate is judged
    window_s: Annotated[float, Ge(0.01)] = 30.0
    cooldown_s: Annotated[float, Ge(0.001)] = 30.0
    probes: Annotated[int, Ge(1)] = 3


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings,
        clock: Callable[[], float],
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_change = on_change  # told every new state (e.g. to export it as a metric)
        self._state = CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        # Each half-open period has its own generation, so a late answer to a probe
        # of an earlier period cannot close the breaker.
        self._generation = 0
        self._probes_out = 0
        self._probe_successes = 0
        self._window = SlidingWindow(settings.window_s, 2, clock)

    @property
    def state(self) -> int:
        self._refresh()
        return self._state

    def cooldown_remaining(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown_s - self.clock())

    def recent(self) -> tuple[int, float]:
        """(calls, error rate) over the window."""
        calls, failures = self._window.totals()
        return int(calls), (failures / calls if calls else 0.0)

    def allow(self) -> int | None:
        """A permit to call the deployment, or None to skip it now."""
        self._refresh()
        if self._state == CLOSED:
            return NOT_A_PROBE
        if self._state == HALF_OPEN and self._probes_out < self.settings.probes:
            self._probes_out += 1
            return self._generation
        return None

    def record_success(self, permit: int) -> None:
        self._window.add(_CALLS)
        self._consecutive = 0
        if self._is_probe(permit):
            self._probes_out -= 1
            self._probe_successes += 1
            if self._probe_successes >= self.settings.probes:
                self._close()

    def record_failure(self, permit: int) -> None:
        self._window.add(_CALLS)
        self._window.add(_FAILURES)
        self._consecutive += 1
        if self._is_probe(permit) or (self._state == CLOSED and self._tripped()):
            self._open()

    def release(self, permit: int) -> None:
        """The call ended without telling anything about the deployment's health."""
        if self._is_probe(permit):
            self._probes_out -= 1

    def _tripped(self) -> bool:
        if self._consecutive >= self.settings.failures:
            return True
        calls, rate = self.recent()
        return calls >= self.settings.min_calls and rate >= self.settings.error_rate

    def _is_probe(self, permit: int) -> bool:
        return permit != NOT_A_PROBE and permit == self._generation and self._state == HALF_OPEN

    def _refresh(self) -> None:
        if self._state == OPEN and self.clock() >= self._opened_at + self.settings.cooldown_s:
            self._generation += 1
            self._probes_out = 0
            self._probe_successes = 0
            self._enter(HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._enter(OPEN)

    def _close(self) -> None:
        self._consecutive = 0
        self._window.clear()  # failures from before the outage must not re-open it at once
        self._enter(CLOSED)

    def _enter(self, state: int) -> None:
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
