"""Tier selection from a latency budget, with predictions given directly."""

from __future__ import annotations

import pytest

from policies.routing.tier_choice import (
    FITS,
    NO_BUDGET,
    NONE_FIT_FASTEST,
    UNCERTAIN_MARGIN,
    Estimate,
    TierBackup,
    TierEstimate,
    TierSelector,
    backup_warning,
)

TIERS = {"pro": "m-pro", "fast": "m-fast"}


def estimates(**p90: float | str) -> Estimate:
    """model -> estimate; "open": every breaker is open; "~0.3": 0.3 s, uncertain."""

    def estimate(model: str) -> TierEstimate:
        value = p90[model.replace("m-", "")]
        if value == "open":
            return TierEstimate(False, float("inf"), confident=False)
        if isinstance(value, str):
            return TierEstimate(True, float(value.lstrip("~")), confident=False)
        return TierEstimate(True, value)

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
    assert choice.backup == TierBackup("auto", "m-fast", pytest.approx(0.895), 1.0)


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


def test_an_uncertain_prediction_decides_like_any_other() -> None:
    """Nothing fits for being unmeasured: an uncertain 300 ms pro does not fit 50 ms."""
    choice = SELECTOR.choose("auto", TIERS, 0.05, estimates(pro="~0.3", fast="~0.01"))
    assert (choice.tier, choice.reason) == ("fast", FITS)


def test_an_uncertain_fast_backup_starts_with_room_to_spare() -> None:
    choice = SELECTOR.choose("auto", TIERS, 1.0, estimates(pro="~0.2", fast="~0.1"))
    assert choice.tier == "pro" and choice.backup is not None
    assert choice.backup.after_s == pytest.approx(1.0 - 0.005 - 0.1 * UNCERTAIN_MARGIN)
    confident = SELECTOR.choose("auto", TIERS, 1.0, estimates(pro="~0.2", fast=0.1)).backup
    assert confident is not None and confident.after_s == pytest.approx(0.895)


def test_backup_warning_says_what_happened_and_what_to_change() -> None:
    backup = TierBackup("auto", "m-fast", 0.215, 0.3)
    late = backup_warning(backup, "m-pro", primary_failed=False)
    assert late.startswith("backup answered: ")
    assert "'m-pro' had not answered after 215 ms" in late and "300 ms" in late
    assert "'m-fast' of 'auto'" in late
    failed = backup_warning(backup, "m-pro", primary_failed=True)
    assert failed == (
        "backup answered: 'm-pro' failed, so the fast tier 'm-fast' of 'auto' served the request"
    )


def test_a_tier_with_every_breaker_open_is_passed_over() -> None:
    choice = SELECTOR.choose("auto", TIERS, 1.0, estimates(pro="open", fast=0.1))
    assert (choice.tier, choice.reason) == ("fast", FITS)


def test_no_backup_when_fast_could_not_finish_in_time_or_is_unavailable() -> None:
    assert SELECTOR.choose("auto", TIERS, 0.5, estimates(pro=0.3, fast=0.5)).backup is None
    assert SELECTOR.choose("auto", TIERS, 0.5, estimates(pro=0.3, fast="open")).backup is None
    assert SELECTOR.choose("auto", TIERS, 0.5, estimates(pro=0.3, fast="~0.4")).backup is None


def test_single_tier_alias() -> None:
    choice = SELECTOR.choose("auto", {"fast": "m-fast"}, 0.01, estimates(fast=0.1))
    assert (choice.model, choice.reason) == ("m-fast", NONE_FIT_FASTEST)
