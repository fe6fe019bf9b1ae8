"""What the gateway knows about each deployment in this process: its circuit breaker,
its latency model and how many calls to it are in flight (for `max_in_flight`).

Keyed by deployment name, so two gateway models served by the same upstream model on
the same provider share one breaker and one latency model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from policies.routing.breaker import CLOSED, OPEN, BreakerSettings, CircuitBreaker
from policies.routing.latency import LatencyModel, LatencyPrior, LatencySettings
from providers.types import Deployment


@dataclass(slots=True)
class DeploymentHealth:
    breaker: CircuitBreaker
    latency: LatencyModel
    in_flight: int = 0

    def full(self, deployment: Deployment) -> bool:
        limit = deployment.max_in_flight
        return limit is not None and self.in_flight >= limit

    def usable(self, deployment: Deployment) -> bool:
        """Worth trying now: its breaker lets calls through and it has room."""
        return self.breaker.state != OPEN and not self.full(deployment)


class HealthBook:
    def __init__(
        self,
        breaker: BreakerSettings,
        latency: LatencySettings,
        clock: Callable[[], float],
        on_state: Callable[[str, int], None] | None = None,
    ) -> None:
        self.breaker_settings = breaker
        self.latency_settings = latency
        self.clock = clock
        self.on_state = on_state  # (deployment, new breaker state)
        self._entries: dict[str, DeploymentHealth] = {}

    def add(
        self, name: str, prior: LatencyPrior | None = None, prior_source: str = "configured"
    ) -> DeploymentHealth:
        """Register a deployment (the first prior given for a name is kept; None: the
        broad default)."""
        entry = self._entries.get(name)
        if entry is None:
            on_change = None
            if self.on_state is not None:
                on_change = functools.partial(self.on_state, name)
                on_change(CLOSED)
            entry = DeploymentHealth(
                CircuitBreaker(self.breaker_settings, self.clock, on_change),
                LatencyModel(self.latency_settings, prior, self.clock, prior_source),
            )
            self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> DeploymentHealth:
        return self._entries[name]

    def items(self) -> Iterator[tuple[str, DeploymentHealth]]:
        return iter(self._entries.items())
