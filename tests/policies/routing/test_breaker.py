"""The circuit breaker and the sliding window under it, on a fake clock."""

from __future__ import annotations

from policies.routing.breaker import (
    CLOSED,
    HALF_OPEN,
    NOT_A_PROBE,
    OPEN,
    BreakerSettings,
    CircuitBreaker,
)
from policies.routing.window import SlidingWindow
from tests.fakes.clock import FakeClock


def breaker(clock: FakeClock, **settings: float) -> CircuitBreaker:
    defaults = {
        "failures": 3,
        "error_rate": 0.5,
        "min_calls": 10,
        "window_s": 10.0,
        "cooldown_s": 5.0,
        "probes": 2,
    }
    return CircuitBreaker(BreakerSettings(**{**defaults, **settings}), clock)  # type: ignore[arg-type]


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = b.allow()
        assert permit is not None
        b.record_failure(permit)


def succeed(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = b.allow()
        assert permit is not None
        b.record_success(permit)


def test_opens_after_consecutive_failures_and_skips_while_open() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state == CLOSED
    succeed(b)  # a success resets the streak
    fail(b, 2)
    assert b.state == CLOSED
    fail(b)
    assert b.state == OPEN
    assert b.allow() is None
    assert b.cooldown_remaining() == 5.0
    clock.advance(4.9)
    assert b.allow() is None
    assert round(b.cooldown_remaining(), 6) == 0.1


def test_half_open_lets_a_few_probes_through_then_closes() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(5.0)
    assert b.state == HALF_OPEN
    first, second = b.allow(), b.allow()
    assert first is not None and first != NOT_A_PROBE and second is not None
    assert b.allow() is None  # only `probes` at once
    b.record_success(first)
    assert b.state == HALF_OPEN
    b.record_success(second)
    assert b.state == CLOSED
    assert b.allow() == NOT_A_PROBE


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(5.0)
    probe = b.allow()
    assert probe is not None
    b.record_failure(probe)
    assert b.state == OPEN
    assert b.cooldown_remaining() == 5.0


def test_released_probe_frees_its_slot_without_counting() -> None:
    clock = FakeClock()
    b = breaker(clock, probes=1)
    fail(b, 3)
    clock.advance(5.0)
    probe = b.allow()
    assert probe is not None and b.allow() is None
    b.release(probe)  # e.g. the caller's 400: says nothing about the deployment
    assert b.state == HALF_OPEN
    again = b.allow()
    assert again is not None
    b.record_success(again)
    assert b.state == CLOSED


def test_late_answer_from_an_earlier_half_open_period_does_not_close() -> None:
    clock = FakeClock()
    b = breaker(clock, probes=1)
    fail(b, 3)
    clock.advance(5.0)
    stale = b.allow()
    assert stale is not None
    b.record_failure(stale)  # the probe fails: open again, then half-open again
    clock.advance(5.0)
    fresh = b.allow()
    assert fresh is not None and fresh != stale
    b.record_success(stale)  # a permit of the previous period counts for nothing
    assert b.state == HALF_OPEN
    b.record_success(fresh)
    assert b.state == CLOSED


def test_error_rate_over_min_calls_opens_without_a_streak() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=100, min_calls=10, error_rate=0.5)
    for _ in range(4):
        fail(b)
        succeed(b)
    assert b.state == CLOSED  # 8 calls: fewer than min_calls
    fail(b)
    assert b.state == CLOSED  # 9 calls
    fail(b)
    assert b.state == OPEN  # 10 calls, 6 failures
    assert b.recent() == (10, 0.6)


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=100, min_calls=4, error_rate=0.5, window_s=10.0)
    fail(b, 3)
    clock.advance(11.0)
    succeed(b, 2)
    fail(b)
    assert b.state == CLOSED
    assert b.recent() == (3, 1 / 3)


def test_closing_clears_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=100, min_calls=4, error_rate=0.5, probes=1)
    fail(b, 4)
    assert b.state == OPEN
    clock.advance(5.0)
    succeed(b)
    assert b.state == CLOSED
    fail(b)  # would be 5 of 6 without the reset
    assert b.state == CLOSED


def test_sliding_window_expires_whole_slots() -> None:
    clock = FakeClock(0.0)
    window = SlidingWindow(10.0, 2, clock, slots=10)
    window.add(0)
    window.add(1, 2.0)
    clock.advance(5.0)
    window.add(0)
    assert window.totals() == [2.0, 2.0]
    clock.advance(5.0)  # the first slot (t in [0, 1)) has left the window
    assert window.totals() == [1.0, 0.0]
    clock.advance(100.0)
    assert window.totals() == [0.0, 0.0]
