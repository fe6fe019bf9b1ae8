"""Tier selection from a latency budget, with predictions given directly."""

from __future__ import annotations

import pytest

from policies.tier_choice import (
    FITS,
    NO_BUDGET,
    NONE_FIT_FASTEST,
    Estimate,
    TierBackup,
    TierSelector,
)

TIERS = {"pro": "m-pro", "fast": "m-fast"}


def estimates(**p90: float | str | None) -> Estimate:
    """model -> (available, p90); the string "open" means every breaker is open."""

    def estimate(model: str) -> tuple[bool, float | None]:
        value = p90[model.replace("m-", "")]
        if isinstance(value, str):
            return False, None
        return True, value

    return estimate


SELECTOR = TierSelector(overhead_s=0.005)


def test_no_budget_takes_pro() -> None:
    choice = SELECTOR.choose("auto", TIERS, None, estimates(pro=9.0, fast=0.01))
    assert (choice.model, choice.tier, choice.reason, choice.backup) == (
        "m-pro",
        "pro",
        NO_BUDGET,
        None,
    )


def test_loose_budget_takes_pro_with_fast_as_backup() -> None:
    choice = SELECTOR.choose("auto", TIERS, 1.0, estimates(pro=0.3, fast=0.1))
    assert (choice.model, choice.reason, choice.warning) == ("m-pro", FITS, None)
    # fast can still finish if started 1.0 - 0.005 - 0.1 s after pro.
    assert choice.backup == TierBackup("auto", "m-fast", pytest.approx(0.895))


def test_tight_budget_takes_fast() -> None:
    choice = SELECTOR.choose("auto", TIERS, 0.2, estimates(pro=0.3, fast=0.1))
    assert (choice.model, choice.tier, choice.reason, choice.backup) == (
        "m-fast",
        "fast",
        FITS,
        None,
    )


def test_overhead_counts_against_the_budget() -> None:
    choice = SELECTOR.choose("auto", TIERS, 0.3, estimates(pro=0.3, fast=0.1))
    assert choice.tier == "fast"


def test_none_fits_takes_the_fastest_with_a_warning() -> None:
    choice = SELECTOR.choose("auto", TIERS, 0.05, estimates(pro=0.3, fast=0.1))
    assert (choice.model, choice.reason) == ("m-fast", NONE_FIT_FASTEST)
    assert choice.warning is not None
    assert "50 ms" in choice.warning and "'m-fast'" in choice.warning and "100 ms" in choice.warning
    slow_fast = SELECTOR.choose("auto", TIERS, 0.05, estimates(pro=0.2, fast=0.4))
    assert slow_fast.model == "m-pro"


def test_unknown_latency_counts_as_fitting() -> None:
    assert SELECTOR.choose("auto", TIERS, 0.05, estimates(pro=None, fast=0.01)).tier == "pro"
    choice = SELECTOR.choose("auto", TIERS, 0.05, estimates(pro=0.3, fast=None))
    assert (choice.tier, choice.reason) == ("fast", FITS)


def test_a_tier_with_every_breaker_open_is_passed_over() -> None:
    choice = SELECTOR.choose("auto", TIERS, 1.0, estimates(pro="open", fast=0.1))
    assert (choice.tier, choice.reason) == ("fast", FITS)


def test_no_backup_when_fast_could_not_finish_in_time_or_is_unknown() -> None:
    assert SELECTOR.choose("auto", TIERS, 0.5, estimates(pro=0.3, fast=0.5)).backup is None
    assert SELECTOR.choose("auto", TIERS, 0.5, estimates(pro=0.3, fast=None)).backup is None


def test_single_tier_alias() -> None:
    choice = SELECTOR.choose("auto", {"fast": "m-fast"}, 0.01, estimates(fast=0.1))
    assert (choice.model, choice.reason) == ("m-fast", NONE_FIT_FASTEST)
