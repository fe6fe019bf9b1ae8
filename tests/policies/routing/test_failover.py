"""The failover policy on its own: scripted upstreams, a fake clock, no HTTP.

Each deployment's script is a list of outcomes, one per call: a number of seconds the
call takes before answering, or a ProviderError to raise. Time passes only on the
fake clock, so backoffs and Retry-After waits are checked exactly and cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from policies.routing.breaker import CLOSED, OPEN, BreakerSettings
from policies.routing.failover import (
    BREAKER_OPEN,
    BULKHEAD_FULL,
    HEDGE_LOST,
    HEDGE_WON,
    RETRY_AFTER,
    BackoffSettings,
    Exhausted,
    Failover,
    FailoverPlan,
    FailoverReport,
)
from policies.routing.health import HealthBook
from policies.routing.latency import LatencySettings
from policies.routing.retry_budget import RetryBudget, RetryBudgetSettings
from providers.local import LocalOptions, LocalProvider
from providers.types import AUTH, CONNECT, STATUS, TIMEOUT, Deployment, ProviderError
from tests.fakes.clock import FakeClock

PROVIDER = LocalProvider("p", LocalOptions())


def unavailable(retry_after: float | None = None, status: int = 503) -> ProviderError:
    return ProviderError(
        f"answered {status}", kind=STATUS, retryable=True, status=status, retry_after_s=retry_after
    )


BAD_REQUEST = ProviderError("answered 400", kind=STATUS, retryable=False, status=400)
REFUSED_KEY = ProviderError("answered 401", kind=AUTH, retryable=False, status=401)
RESET = ProviderError("cannot reach", kind=CONNECT, retryable=True)


class Upstreams:
    """Scripted deployments; records (name, timeout, time) of every call."""

    def __init__(self, clock: FakeClock, **scripts: list[Any]) -> None:
        self.clock = clock
        self.scripts = scripts
        self.calls: list[tuple[str, float, float]] = []

    async def __call__(self, deployment: Deployment, timeout_s: float) -> str:
        self.calls.append((deployment.name, timeout_s, self.clock()))
        outcome = self.scripts[deployment.name].pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        if callable(outcome):
            return await outcome()
        self.clock.advance(outcome)
        return f"answer from {deployment.name}"

    def called(self) -> list[str]:
        return [name for name, _, _ in self.calls]


class Setup:
    def __init__(self, names: str = "ab", **routing: Any) -> None:
        self.clock = FakeClock()
        breaker = routing.pop("breaker", BreakerSettings(failures=3, cooldown_s=10.0, probes=1))
        budget = routing.pop("budget", RetryBudgetSettings(ratio=1.0, min_per_s=10.0))
        self.health = HealthBook(breaker, LatencySettings(min_samples=1), self.clock)
        self.budget = RetryBudget(budget, self.clock)
        self.failover = Failover(
            self.health,
            self.budget,
            routing.pop("backoff", BackoffSettings(base_ms=100.0, max_ms=1000.0)),
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        limits = routing.pop("max_in_flight", {})
        self.deployments = [Deployment(n, PROVIDER, n, max_in_flight=limits.get(n)) for n in names]
        for d in self.deployments:
            self.health.add(d.name)

    def plan(self, timeout_s: float = 10.0, **kwargs: Any) -> FailoverPlan:
        return FailoverPlan(self.deployments, self.clock() + timeout_s, docs=3, chars=300, **kwargs)

    async def run(self, upstreams: Upstreams, **plan: Any) -> tuple[str, FailoverReport]:
        report = FailoverReport()
        _, answer = await self.failover.run(self.plan(**plan), upstreams, report)
        return answer, report

    async def exhaust(self, upstreams: Upstreams, **plan: Any) -> Exhausted:
        with pytest.raises(Exhausted) as info:
            await self.run(upstreams, **plan)
        return info.value

    def open_breaker(self, name: str) -> None:
        breaker = self.health[name].breaker
        while breaker.state != OPEN:
            breaker.record_failure(breaker.allow() or 0)


async def test_retryable_failure_fails_over_to_the_next_deployment_at_once() -> None:
    s = Setup()
    up = Upstreams(s.clock, a=[unavailable()], b=[0.05])
    answer, report = await s.run(up)
    assert answer == "answer from b"
    assert up.called() == ["a", "b"] and report.attempts == 2
    assert s.clock.slept == []


async def test_a_lone_deployment_is_retried_after_growing_jittered_backoff() -> None:
    s = Setup("a")
    up = Upstreams(s.clock, a=[RESET, RESET, RESET])
    error = await s.exhaust(up)
    assert error.last is RESET and error.report.attempts == 3
    assert up.called() == ["a", "a", "a"]
    first, second = s.clock.slept
    assert 0.05 <= first <= 0.1 and 0.1 <= second <= 0.2  # equal jitter on 100 ms, 200 ms


async def test_backoff_is_capped() -> None:
    s = Setup("a", backoff=BackoffSettings(base_ms=400.0, max_ms=500.0))
    await s.exhaust(Upstreams(s.clock, a=[RESET] * 4), max_attempts=4)
    assert all(wait <= 0.5 for wait in s.clock.slept) and len(s.clock.slept) == 3


async def test_attempts_cycle_through_deployments_up_to_max_attempts() -> None:
    s = Setup("abc")
    up = Upstreams(s.clock, a=[RESET, RESET], b=[RESET, RESET], c=[RESET, RESET])
    error = await s.exhaust(up, max_attempts=5)
    # The first round in order; then whichever backoff ends first.
    assert up.called()[:3] == ["a", "b", "c"]
    assert len(up.calls) == error.report.attempts == 5
    assert all(up.called().count(n) <= 2 for n in "abc")


async def test_callers_mistake_is_not_retried() -> None:
    s = Setup()
    up = Upstreams(s.clock, a=[BAD_REQUEST], b=[0.01])
    with pytest.raises(ProviderError) as info:
        await s.run(up)
    assert info.value is BAD_REQUEST and up.called() == ["a"]
    assert s.health["a"].breaker.recent() == (0, 0.0)  # not the deployment's fault


async def test_refused_credentials_fail_over_and_count_against_the_breaker() -> None:
    s = Setup()
    up = Upstreams(s.clock, a=[REFUSED_KEY], b=[0.01])
    answer, report = await s.run(up)
    assert answer == "answer from b" and up.called() == ["a", "b"] and report.attempts == 2
    assert s.health["a"].breaker.recent() == (1, 1.0)  # the misconfigured one is marked
    assert s.clock.slept == []


async def test_a_misconfigured_deployment_is_not_called_again_in_the_request() -> None:
    s = Setup("a")
    up = Upstreams(s.clock, a=[REFUSED_KEY, 0.01])
    error = await s.exhaust(up, max_attempts=3)
    assert error.last is REFUSED_KEY and up.called() == ["a"]


async def test_retry_after_is_waited_out_when_it_fits() -> None:
    s = Setup("a")
    up = Upstreams(s.clock, a=[unavailable(retry_after=0.6, status=429), 0.01])
    answer, _ = await s.run(up)
    assert answer == "answer from a" and s.clock.slept == [pytest.approx(0.6)]
    assert up.calls[1][2] - up.calls[0][2] == pytest.approx(0.6)


async def test_retry_after_beyond_the_deadline_skips_the_deployment() -> None:
    s = Setup()
    up = Upstreams(s.clock, a=[unavailable(retry_after=0.8, status=429)], b=[RESET, RESET])
    error = await s.exhaust(up, timeout_s=0.5)
    # a is not waited for (0.8 s > 0.5 s left); b's short backoff fits.
    assert up.called() == ["a", "b", "b"]
    assert error.report.skipped == {"a": RETRY_AFTER}
    assert len(s.clock.slept) == 1 and s.clock.slept[0] <= 0.1


async def test_retry_after_longer_than_the_maximum_wait_skips_the_deployment() -> None:
    backoff = BackoffSettings(base_ms=10.0, max_retry_after_ms=500.0)
    s = Setup("a", backoff=backoff)
    error = await s.exhaust(Upstreams(s.clock, a=[unavailable(retry_after=0.6)]))
    assert error.report.attempts == 1 and error.report.skipped == {"a": RETRY_AFTER}
    assert error.last is not None and error.last.retry_after_s == 0.6


async def test_no_attempt_starts_after_the_deadline() -> None:
    s = Setup("a")
    up = Upstreams(s.clock, a=[0.01])
    error = await s.exhaust(up, timeout_s=0.0)
    assert error.last is None and up.calls == []


async def test_each_attempt_gets_what_is_left_of_the_deadline() -> None:
    s = Setup()
    slow_fail = unavailable()

    async def after_300_ms() -> str:
        s.clock.advance(0.3)
        raise slow_fail

    up = Upstreams(s.clock, a=[after_300_ms], b=[0.01])
    await s.run(up, timeout_s=1.0)
    assert [round(t, 6) for _, t, _ in up.calls] == [1.0, 0.7]


async def test_backoff_that_would_end_after_the_deadline_ends_the_request() -> None:
    s = Setup("a", backoff=BackoffSettings(base_ms=1000.0, max_ms=1000.0))
    up = Upstreams(s.clock, a=[RESET, 0.01])
    error = await s.exhaust(up, timeout_s=0.4)
    assert up.called() == ["a"] and error.last is RESET and s.clock.slept == []


async def test_open_breaker_is_skipped() -> None:
    s = Setup()
    s.open_breaker("a")
    up = Upstreams(s.clock, a=[0.01], b=[0.01])
    answer, report = await s.run(up)
    assert answer == "answer from b" and up.called() == ["b"]
    assert report.skipped == {"a": BREAKER_OPEN} and report.attempts == 1


async def test_every_breaker_open_calls_no_one_and_says_when_to_retry() -> None:
    s = Setup()
    s.open_breaker("a")
    s.clock.advance(4.0)
    s.open_breaker("b")
    up = Upstreams(s.clock, a=[0.01], b=[0.01])
    error = await s.exhaust(up)
    assert up.calls == [] and error.last is None
    assert error.report.skipped == {"a": BREAKER_OPEN, "b": BREAKER_OPEN}
    assert error.report.breaker_wait_s == pytest.approx(6.0)


async def test_probe_after_cooldown_even_when_every_breaker_is_open() -> None:
    s = Setup()
    s.open_breaker("a")
    s.open_breaker("b")
    s.clock.advance(10.0)
    up = Upstreams(s.clock, a=[0.01], b=[0.01])
    answer, _ = await s.run(up)
    assert answer == "answer from a"
    assert s.health["a"].breaker.state == CLOSED  # one good probe closes it (probes=1)


async def test_breaker_opens_mid_request_and_further_attempts_skip_it() -> None:
    s = Setup("a", breaker=BreakerSettings(failures=2, cooldown_s=10.0))
    up = Upstreams(s.clock, a=[RESET, RESET, 0.01])
    error = await s.exhaust(up)
    assert up.called() == ["a", "a"] and error.report.skipped == {"a": BREAKER_OPEN}


async def test_spent_retry_budget_stops_retries() -> None:
    s = Setup(budget=RetryBudgetSettings(ratio=0.0, min_per_s=0.0))
    up = Upstreams(s.clock, a=[RESET], b=[0.01])
    error = await s.exhaust(up)
    assert up.called() == ["a"] and error.report.budget_exhausted


async def test_full_bulkhead_is_skipped() -> None:
    s = Setup(max_in_flight={"a": 2})
    s.health["a"].in_flight = 2  # two calls of other requests are running
    up = Upstreams(s.clock, a=[0.01], b=[0.01])
    answer, report = await s.run(up)
    assert answer == "answer from b" and report.skipped == {"a": BULKHEAD_FULL}


async def test_outcomes_feed_breaker_latency_and_in_flight() -> None:
    s = Setup()
    seen_in_flight: list[int] = []

    async def answer_in_250_ms() -> str:
        seen_in_flight.append(s.health["b"].in_flight)
        s.clock.advance(0.25)
        return "late answer"

    timeout = ProviderError("no answer", kind=TIMEOUT, retryable=True)
    up = Upstreams(s.clock, a=[timeout], b=[answer_in_250_ms])
    assert (await s.run(up))[0] == "late answer"
    assert seen_in_flight == [1] and s.health["b"].in_flight == 0
    assert s.health["a"].breaker.recent() == (1, 1.0)
    assert s.health["b"].breaker.recent() == (1, 0.0)
    assert s.health["b"].latency.predict(3, 300) == pytest.approx(0.25, rel=0.15)


async def hang() -> str:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_hedge_to_another_deployment_when_the_first_is_slow() -> None:
    s = Setup()
    cancelled: list[str] = []

    async def slow() -> str:
        try:
            return await hang()
        except asyncio.CancelledError:
            cancelled.append("a")
            raise

    up = Upstreams(s.clock, a=[slow], b=[0.01])
    answer, report = await s.run(up, hedge_delay_s=0.01)
    assert answer == "answer from b" and up.called() == ["a", "b"]
    assert report.hedges == [HEDGE_WON] and cancelled == ["a"]
    assert s.health["a"].in_flight == 0
    assert s.health["a"].breaker.recent() == (0, 0.0)  # a cancelled loser is not a failure


async def test_hedge_loses_when_the_first_answers_first() -> None:
    s = Setup()
    hedge_started = asyncio.Event()

    async def answers_once_hedged() -> str:
        await hedge_started.wait()
        return "first"

    async def hedge() -> str:
        hedge_started.set()
        return await hang()

    up = Upstreams(s.clock, a=[answers_once_hedged], b=[hedge])
    answer, report = await s.run(up, hedge_delay_s=0.01)
    assert answer == "first" and report.hedges == [HEDGE_LOST]


async def test_no_hedge_on_the_same_deployment() -> None:
    s = Setup("a")

    async def slowish() -> str:
        await asyncio.sleep(0.05)  # well past the hedge delay
        return "only"

    up = Upstreams(s.clock, a=[slowish])
    answer, report = await s.run(up, hedge_delay_s=0.001)
    assert answer == "only" and report.hedges == [] and up.called() == ["a"]


async def test_with_hedging_on_the_deadline_cancels_what_still_runs() -> None:
    # (Without hedging, calls are awaited inline and keep to their timeout themselves.)
    s = Setup("a")
    s.failover.clock = _real_offset_clock(s.clock)
    up = Upstreams(s.clock, a=[hang])
    error = await s.exhaust(up, timeout_s=0.05, hedge_delay_s=10.0)
    assert error.last is not None and error.last.kind == TIMEOUT
    assert "within the request's deadline" in error.last.message
    assert s.health["a"].in_flight == 0


def _real_offset_clock(clock: FakeClock) -> Callable[[], float]:
    """Real time from the fake clock's current reading (the deadline must really pass)."""
    import time

    start, base = time.monotonic(), clock()
    return lambda: base + time.monotonic() - start


async def test_timeout_counts_against_the_breaker_only_with_the_usual_time_given() -> None:
    s = Setup("a")
    for _ in range(3):
        s.health["a"].latency.record(3, 300, 0.5)  # a usually takes 0.5 s
    timeout = ProviderError("did not answer", kind=TIMEOUT, retryable=True)

    async def times_out() -> str:
        s.clock.advance(0.2)
        raise timeout

    await s.exhaust(Upstreams(s.clock, a=[times_out]), timeout_s=0.2, max_attempts=1)
    assert s.health["a"].breaker.recent() == (0, 0.0)  # a 0.2 s budget: not a's fault
    await s.exhaust(Upstreams(s.clock, a=[times_out]), timeout_s=2.0, max_attempts=1)
    assert s.health["a"].breaker.recent() == (1, 1.0)  # 2 s given, no answer: a's fault


async def test_calls_running_at_the_deadline_count_as_too_slow() -> None:
    s = Setup("a")
    s.failover.clock = _real_offset_clock(s.clock)
    await s.exhaust(Upstreams(s.clock, a=[hang]), timeout_s=0.05, hedge_delay_s=10.0)
    assert s.health["a"].breaker.recent() == (1, 1.0)  # no usual latency known: counted
    assert s.health["a"].latency.samples() == 1
