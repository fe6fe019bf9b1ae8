"""The retry budget on a fake clock."""

from __future__ import annotations

from policies.routing.retry_budget import RetryBudget, RetryBudgetSettings
from tests.fakes.clock import FakeClock


def test_retries_are_capped_at_a_ratio_of_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.2, min_per_s=0.0, window_s=10.0), clock)
    granted = 0
    for _ in range(100):
        budget.record_request()
        granted += budget.try_acquire() + budget.try_acquire()  # each wants two retries
    assert granted == 20


def test_minimum_per_second_allows_retries_at_low_traffic() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.0, min_per_s=0.5, window_s=10.0), clock)
    budget.record_request()
    assert [budget.try_acquire() for _ in range(7)] == [True] * 5 + [False] * 2


def test_budget_refills_as_the_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.5, min_per_s=0.0, window_s=10.0), clock)
    for _ in range(4):
        budget.record_request()
    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.try_acquire()
    clock.advance(11.0)  # the old requests and retries have left the window
    assert not budget.try_acquire()
    budget.record_request()
    budget.record_request()
    assert budget.try_acquire()
    assert budget.snapshot() == {"requests": 2.0, "retries": 1.0, "available": 0.0}
