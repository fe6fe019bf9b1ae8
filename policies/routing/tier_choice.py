"""Latency-budget model selection: which tier of an alias (pro or fast) serves a request.

The best tier (pro before fast) whose predicted p90 latency for a request of this size,
over its best available deployment, plus the gateway's own overhead, fits the budget.
If none fits, the fastest, with a warning. Every tier has a prediction: observations
blended with a prior (configured, a model family's default, or a broad default; see
`policies.routing.latency`), so nothing "fits" merely because it was never measured.

A prediction is a guess, so the whole budget is never spent on one: when pro is chosen
and fast could still finish in time, the choice carries a backup. If pro has not
answered by the latest moment fast can still finish within the budget (budget minus
overhead minus fast's p90, or 1.5 times that p90 while fast's own prediction is
uncertain), fast starts too and whichever answers first serves. Armed, the backup
costs nothing: it is called only when pro is already late.

`downgrade=False` (the shadow quality guard, `policies.quality.shadow`) keeps pro where fast
would have been chosen for the budget, still with fast as the backup, so the budget
holds whenever fast can meet it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

PREFERENCE = ("pro", "fast")
# Bounded metric label values: why a tier was chosen.
FITS, NONE_FIT_FASTEST, NO_BUDGET = "fits", "none_fit_fastest", "no_budget"
QUALITY_GUARD = "quality_guard"  # pro kept: the team's downgrades are stopped

# How much earlier an uncertain backup starts: its p90 is a guess, so leave it room.
UNCERTAIN_MARGIN = 1.5


@dataclass(frozen=True, slots=True)
class TierEstimate:
    """What the gateway expects of one model for this request."""

    available: bool  # any deployment whose breaker is not open
    p90_s: float  # predicted p90 latency of its best deployment
    confident: bool = True  # enough recent observations behind the prediction


# For a model: its estimate for the request being routed.
Estimate = Callable[[str], TierEstimate]


@dataclass(frozen=True, slots=True)
class TierBackup:
    """Start `model` too if the chosen tier has not answered `after_s` after it started."""

    alias: str
    model: str
    after_s: float
    budget_s: float | None = None  # the latency budget it protects, for the warning


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
        downgrade: bool = True,
    ) -> TierChoice:
        choice = self._choose(alias, tiers, budget_s, estimate)
        if downgrade or choice.tier != "fast" or "pro" not in tiers:
            return choice
        pro = estimate(tiers["pro"])
        if not pro.available:
            return choice
        assert budget_s is not None  # without a budget pro is always chosen
        backup = self._backup(alias, "pro", tiers, {"fast": estimate(tiers["fast"])}, budget_s)
        return TierChoice(tiers["pro"], "pro", QUALITY_GUARD, _guarded(tiers["pro"]), backup)

    def _choose(
        self,
        alias: str,
        tiers: Mapping[str, str],
        budget_s: float | None,
        estimate: Estimate,
    ) -> TierChoice:
        names = [t for t in PREFERENCE if t in tiers]
        if budget_s is None:
            return TierChoice(tiers[names[0]], names[0], NO_BUDGET)
        estimates = {tier: estimate(tiers[tier]) for tier in names}
        # A tier with every breaker open cannot answer in time at all.
        predicted = {t: e.p90_s if e.available else math.inf for t, e in estimates.items()}
        for tier in names:
            if predicted[tier] + self.overhead_s <= budget_s:
                backup = self._backup(alias, tier, tiers, estimates, budget_s)
                return TierChoice(tiers[tier], tier, FITS, backup=backup)
        fastest = min(names, key=lambda t: predicted[t])
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
        estimates: Mapping[str, TierEstimate],
        budget_s: float,
    ) -> TierBackup | None:
        fast = estimates.get("fast")
        if tier != "pro" or fast is None or not fast.available:
            return None
        needs_s = fast.p90_s if fast.confident else fast.p90_s * UNCERTAIN_MARGIN
        after_s = budget_s - self.overhead_s - needs_s
        return TierBackup(alias, tiers["fast"], after_s, budget_s) if after_s > 0 else None


def backup_warning(backup: TierBackup, primary: str, primary_failed: bool) -> str:
    """The `meta.warnings` entry of a request its backup tier answered."""
    fast = f"the fast tier {backup.model!r} of {backup.alias!r}"
    if primary_failed:
        return f"backup answered: {primary!r} failed, so {fast} served the request"
    budget = (
        f" to finish within the latency budget of {backup.budget_s * 1000:.0f} ms"
        if backup.budget_s is not None
        else ""
    )
    return (
        f"backup answered: {primary!r} had not answered after {backup.after_s * 1000:.0f} ms, "
        f"so {fast} was started{budget} and answered first"
    )


def _guarded(model: str) -> str:
    return (
        f"served by {model!r} although it is predicted to exceed the latency budget: this "
        "team's downgrades to the fast tier are stopped while fast's rankings agree with "
        "pro's below the alias's shadow.min_ndcg (see GET /admin/tiers)"
    )


def _none_fit(alias: str, budget_s: float, model: str, p90: float) -> str:
    expected = f" (predicted p90 {p90 * 1000:.0f} ms)" if math.isfinite(p90) else ""
    return (
        f"no tier of {alias!r} is predicted to answer within the latency budget of "
        f"{budget_s * 1000:.0f} ms; served by the fastest, {model!r}{expected}"
    )
