"""The order in which a request tries a model's deployments.

Lower `priority` first; within one priority, a weighted random order so traffic
spreads by `weight` while every deployment stays available for failover.
Deployments that cannot take a call now (breaker open, `max_in_flight` reached) go
last, in the same order, so a request reaches a usable one first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import groupby

from providers.types import Deployment


def attempt_order(
    deployments: Sequence[Deployment],
    rng: random.Random,
    usable: Callable[[Deployment], bool] | None = None,
) -> list[Deployment]:
    if len(deployments) == 1:
        return list(deployments)
    ordered: list[Deployment] = []
    by_priority = sorted(deployments, key=lambda d: d.priority)
    for _, group in groupby(by_priority, key=lambda d: d.priority):
        ordered.extend(_weighted_shuffle(list(group), rng))
    if usable is None:
        return ordered
    now = [d for d in ordered if usable(d)]
    if len(now) == len(ordered):
        return ordered
    return now + [d for d in ordered if not usable(d)]


def _weighted_shuffle(group: list[Deployment], rng: random.Random) -> list[Deployment]:
    if len(group) == 1:
        return group

    # Efraimidis-Spirakis: sort by u^(1/w) gives a weighted random permutation;
    # a weight of 0 keeps a deployment for failover only.
    def key(d: Deployment) -> float:
        return rng.random() ** (1.0 / d.weight) if d.weight > 0 else -1.0

    return sorted(group, key=key, reverse=True)
