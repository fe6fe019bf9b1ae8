"""Latency-budget model selection: which tier of an alias (pro or fast) serves a request.

The best tier (pro before fast) whose predicted p90 latency for a request of this size,
over its best available deployment, plus the gateway's own overhead, fits the budget.
If none fits, the fastest, with a warning. A tier whose prediction is unknown (no prior,
no data yet) counts as fitting, so it gets tried and measured.

When pro is chosen and fast is known, the choice carries a backup: if pro has not
answered by the time fast could still finish within the budget, start fast too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

PREFERENCE = ("pro", "fast")
# Bounded metric label values: why a tier was chosen.
FITS, NONE_FIT_FASTEST, NO_BUDGET = "fits", "none_fit_fastest", "no_budget"

# For a model: (is any deployment available, predicted p90 seconds or None if unknown).
Estimate = Callable[[str], tuple[bool, float | None]]


@dataclass(frozen=True, slots=True)
class TierBackup:
    """Start `model` too if the chosen tier has not answered `after_s` after it started."""

    alias: str
    model: str
    after_s: float


@dataclass(frozen=True, slots=True)
class TierChoice:
    model: str
    tier: str
    reason: str
    warning: str | None = None
    backup: TierBackup | None = None


class TierSelector:
    def __init__(self, overhead_s: float) -> None:
        self.overhead_s = overhead_s

    def choose(
        self,
        alias: str,
        tiers: Mapping[str, str],
        budget_s: float | None,
        estimate: Estimate,
    ) -> TierChoice:
        names = [t for t in PREFERENCE if t in tiers]
        if budget_s is None:
            return TierChoice(tiers[names[0]], names[0], NO_BUDGET)
        predicted: dict[str, float | None] = {}
        for tier in names:
            available, p90 = estimate(tiers[tier])
            # A tier with every breaker open cannot answer in time at all.
            predicted[tier] = p90 if available else math.inf
        for tier in names:
            p90 = predicted[tier]
            if p90 is None or p90 + self.overhead_s <= budget_s:
                backup = self._backup(alias, tier, tiers, predicted, budget_s)
                return TierChoice(tiers[tier], tier, FITS, backup=backup)
        fastest = min(names, key=lambda t: predicted[t] or 0.0)
        return TierChoice(
            tiers[fastest],
            fastest,
            NONE_FIT_FASTEST,
            warning=_none_fit(alias, budget_s, tiers[fastest], predicted[fastest]),
        )

    def _backup(
        self,
        alias: str,
        tier: str,
        tiers: Mapping[str, str],
        predicted: Mapping[str, float | None],
        budget_s: float,
    ) -> TierBackup | None:
        if tier != "pro" or "fast" not in tiers:
            return None
        fast = predicted.get("fast")
        if fast is None or math.isinf(fast):
            return None
        after_s = budget_s - self.overhead_s - fast
        return TierBackup(alias, tiers["fast"], after_s) if after_s > 0 else None


def _none_fit(alias: str, budget_s: float, model: str, p90: float | None) -> str:
    expected = (
        f" (predicted p90 {p90 * 1000:.0f} ms)" if p90 is not None and math.isfinite(p90) else ""
    )
    return (
        f"no tier of {alias!r} is predicted to answer within the latency budget of "
        f"{budget_s * 1000:.0f} ms; served by the fastest, {model!r}{expected}"
    )
