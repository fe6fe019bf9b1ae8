"""The order of attempts: priority, weighted spread, unusable deployments last."""

from __future__ import annotations

import random
from collections import Counter

from policies.routing.attempt_order import attempt_order
from providers.local import LocalOptions, LocalProvider
from providers.types import Deployment

PROVIDER = LocalProvider("p", LocalOptions())


def dep(name: str, priority: int = 0, weight: float = 1.0) -> Deployment:
    return Deployment(name, PROVIDER, name, weight=weight, priority=priority)


def names(order: list[Deployment]) -> list[str]:
    return [d.name for d in order]


def test_lower_priority_first() -> None:
    deps = [dep("c", 2), dep("a", 0), dep("b", 1)]
    assert names(attempt_order(deps, random.Random(1))) == ["a", "b", "c"]


def test_weight_spreads_first_choice_within_a_priority() -> None:
    rng = random.Random(7)
    deps = [dep("heavy", weight=3.0), dep("light", weight=1.0), dep("backup", priority=1)]
    firsts = Counter(attempt_order(deps, rng)[0].name for _ in range(4000))
    assert set(firsts) == {"heavy", "light"}
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 3:1
    assert all(attempt_order(deps, rng)[-1].name == "backup" for _ in range(50))


def test_zero_weight_is_failover_only() -> None:
    rng = random.Random(3)
    deps = [dep("spare", weight=0.0), dep("main", weight=1.0)]
    assert all(names(attempt_order(deps, rng)) == ["main", "spare"] for _ in range(50))


def test_unusable_deployments_go_last_in_order() -> None:
    deps = [dep("a", 0), dep("b", 1), dep("c", 2)]
    order = attempt_order(deps, random.Random(1), usable=lambda d: d.name != "a")
    assert names(order) == ["b", "c", "a"]
    assert names(attempt_order(deps, random.Random(1), usable=lambda d: False)) == ["a", "b", "c"]
