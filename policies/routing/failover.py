"""Failover: call a model's deployments until one answers, within the request's deadline.

- Deployments are tried in the given order (see `routing.attempt_order`), skipping
  those whose breaker is open or whose `max_in_flight` is reached. After the last one,
  the order starts again, up to `max_attempts` calls in all.
- A retryable failure (connection, timeout, 429, 5xx, garbled answer) moves on to the
  next deployment at once; calling the same deployment again waits for an exponential
  backoff with jitter, and for its `Retry-After` if it sent one. A deployment whose
  wait would not end before the deadline, or whose Retry-After is longer than
  `max_retry_after_ms`, is skipped for this request.
- A deployment refusing the gateway's credentials or not knowing the upstream model id
  (401/403/404) is misconfigured: it is not called again in this request and its
  breaker counts the failure, but the next deployment is tried (the gateway logs the
  problem for operators; the caller keeps being served).
- Anything else that is not retryable, the caller's mistake (400, 422), ends the
  request at once.
- Every call after the first needs a token from the `RetryBudget`.
- Hedging: if the latest call has not answered after `hedge_delay_s`, another deployment
  is called too; the first good answer wins and the others are cancelled.
- Each call's outcome feeds the deployment's breaker, latency model and in-flight count.
  A timeout counts against the breaker only if the call had at least the deployment's
  usual (p90) time: a tight caller budget is not the deployment's fault. A call
  cancelled because another answered first (a hedge or tier race it lost) is recorded
  as a lower bound of its latency when that is above its predicted p90.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Generic, TypeVar

from annotated_types import Ge, Interval

from policies.routing.first_wins import Race
from policies.routing.health import HealthBook
from policies.routing.retry_budget import RetryBudget
from providers.types import TIMEOUT, Deployment, ProviderError

T = TypeVar("T")
# Calls one deployment with a timeout in seconds; raises ProviderError on failure.
Attempt = Callable[[Deployment, float], Awaitable[T]]
MIN_ATTEMPT_S = 0.005  # no call is started with less time than this left

# Why a deployment was passed over (bounded: used as a metric label).
BREAKER_OPEN, BULKHEAD_FULL, RETRY_AFTER = "breaker_open", "bulkhead_full", "retry_after"
# What became of a hedge (bounded: used as a metric label).
HEDGE_WON, HEDGE_LOST, HEDGE_FAILED = "won", "lost", "failed"


@dataclass
class BackoffSettings:
    base_ms: Annotated[float, Ge(0.0)] = 25.0
    max_ms: Annotated[float, Ge(0.0)] = 1000.0
    # A longer Retry-After is not waited out inside a request: the deployment is skipped
    # (and if it was the last one, the caller gets the 429/503 with that Retry-After).
    max_retry_after_ms: Annotated[float, Ge(0.0)] = 1000.0


@dataclass
class HedgeSettings:
    enabled: bool = False
    delay_ms: Annotated[float, Ge(1.0)] | None = None  # None: observed p95
    max_hedges: Annotated[int, Interval(ge=1, le=3)] = 1


@dataclass(slots=True)
class FailoverPlan:
    deployments: Sequence[Deployment]  # in the order to try them
    deadline: float  # on the executor's clock
    docs: int  # the call's size, for the latency model
    chars: int
    max_attempts: int = 3
    hedge_delay_s: float | None = None  # None: no hedging
    max_hedges: int = 1


@dataclass(slots=True)
class FailoverReport:
    """What happened, for the caller's error message, headers and metrics."""

    attempts: int = 0
    hedges: list[str] = field(default_factory=list)  # one outcome per hedge started
    skipped: dict[str, str] = field(default_factory=dict)  # deployment -> why
    breaker_wait_s: float | None = None  # shortest cooldown left among open breakers
    budget_exhausted: bool = False
    waited_s: float = 0.0  # spent in backoff, not upstream
    last_failed: str | None = None  # the deployment that failed last


class Exhausted(Exception):
    """No deployment answered; `last` is the last failure (None if nothing was called)."""

    def __init__(self, last: ProviderError | None, report: FailoverReport) -> None:
        super().__init__(last.message if last else "no deployment could be called")
        self.last = last
        self.report = report


@dataclass(frozen=True, slots=True)
class _Key:
    deployment: Deployment
    hedge: bool


@dataclass(slots=True)
class _Run(Generic[T]):
    """The state of one request's failover."""

    plan: FailoverPlan
    report: FailoverReport
    race: Race[_Key, T] = field(default_factory=Race)
    cursor: int = 0
    tries: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    hedges_started: int = 0
    stop: bool = False  # the retry budget is spent
    expired: bool = False  # the deadline passed with calls still running


class Failover:
    def __init__(
        self,
        health: HealthBook,
        budget: RetryBudget,
        backoff: BackoffSettings,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.health = health
        self.budget = budget
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep

    async def run(
        self, plan: FailoverPlan, attempt: Attempt[T], report: FailoverReport
    ) -> tuple[Deployment, T]:
        """The first good answer and who gave it, or raise Exhausted / the caller's error."""
        self.budget.record_request()
        run: _Run[T] = _Run(plan, report)
        if plan.hedge_delay_s is None:
            return await self._sequential(run, attempt)
        return await self._hedged(run, attempt)

    async def _sequential(self, run: _Run[T], attempt: Attempt[T]) -> tuple[Deployment, T]:
        """One call at a time, awaited inline (the common case: no task or timer per call;
        each call is given what is left of the deadline, and providers keep to it)."""
        last: ProviderError | None = None
        while (picked := await self._next(run)) is not None:
            deployment, permit = picked
            try:
                return deployment, await self._call(run, deployment, permit, attempt)
            except ProviderError as error:
                last = self._failed(run, deployment, error)
        raise Exhausted(last, run.report)

    async def _hedged(self, run: _Run[T], attempt: Attempt[T]) -> tuple[Deployment, T]:
        """Calls in a race: another deployment joins when the latest is slow."""
        plan, report, race = run.plan, run.report, run.race
        last: ProviderError | None = None
        hedge_at: float | None = None
        try:
            while True:
                if not race.running:
                    if not await self._start(run, attempt, hedge=False):
                        break
                    hedge_at = self._hedge_time(run)
                wake = plan.deadline if hedge_at is None else min(hedge_at, plan.deadline)
                done = await race.next(wake - self.clock())
                if done is None:
                    if hedge_at is None or self.clock() >= plan.deadline:
                        running = [key.deployment.name for key in race.running_keys()]
                        last = _deadline_error(running) or last
                        run.expired = True
                        break
                    hedged = await self._start(run, attempt, hedge=True)
                    hedge_at = self._hedge_time(run) if hedged else None
                    continue
                key, future = done
                error = future.exception()
                if error is None:
                    if key.hedge:
                        report.hedges.append(HEDGE_WON)
                    return key.deployment, future.result()
                if not isinstance(error, ProviderError):
                    raise error
                if key.hedge:
                    report.hedges.append(HEDGE_FAILED)
                last = self._failed(run, key.deployment, error)
        finally:
            for key in await race.cancel():
                if key.hedge:
                    report.hedges.append(HEDGE_LOST)
        raise Exhausted(last, report)

    def _failed(self, run: _Run[T], deployment: Deployment, error: ProviderError) -> ProviderError:
        """Note a failed call; re-raise it if trying again cannot help."""
        run.report.last_failed = deployment.name
        if not error.deployment_fault:
            raise error
        if error.retryable:
            self._after_failure(run, deployment, error)
        else:  # misconfigured: calling it again cannot help
            run.banned.add(deployment.name)
        return error

    async def _start(self, run: _Run[T], attempt: Attempt[T], hedge: bool) -> bool:
        """Start a call in the race: a hedge only if one can start now; otherwise the next
        call, after a backoff if need be."""
        picked = self._pick(run, hedge=True) if hedge else await self._next(run)
        if picked is None:
            return False
        deployment, permit = picked
        run.hedges_started += hedge
        run.race.start(_Key(deployment, hedge), self._call(run, deployment, permit, attempt))
        return True

    def _hedge_time(self, run: _Run[T]) -> float | None:
        plan = run.plan
        if plan.hedge_delay_s is None or run.hedges_started >= plan.max_hedges:
            return None
        return self.clock() + plan.hedge_delay_s

    async def _next(self, run: _Run[T]) -> tuple[Deployment, int] | None:
        """The next deployment to call, waiting out a backoff if that is all that is left."""
        while not run.stop and run.report.attempts < run.plan.max_attempts:
            picked = self._pick(run, hedge=False)
            if picked is not None:
                return picked
            ready = self._earliest_ready(run)
            if ready is None or ready + MIN_ATTEMPT_S >= run.plan.deadline:
                return None
            wait = max(0.0, ready - self.clock())
            run.report.waited_s += wait
            await self.sleep(wait)
        return None

    def _pick(self, run: _Run[T], hedge: bool) -> tuple[Deployment, int] | None:
        """A deployment that may be called now and its breaker permit; counts the attempt."""
        plan, report = run.plan, run.report
        now = self.clock()
        if report.attempts >= plan.max_attempts or plan.deadline - now < MIN_ATTEMPT_S:
            return None
        running = {key.deployment.name for key in run.race.running_keys()} if hedge else ()
        count = len(plan.deployments)
        for offset in range(count):
            index = (run.cursor + offset) % count
            deployment = plan.deployments[index]
            name = deployment.name
            if name in run.banned or name in running or run.not_before.get(name, 0.0) > now:
                continue
            health = self.health[name]
            if health.full(deployment):
                report.skipped[name] = BULKHEAD_FULL
                continue
            permit = health.breaker.allow()
            if permit is None:
                self._skip_open(run, name)
                continue
            if report.attempts and not self.budget.try_acquire():
                health.breaker.release(permit)
                report.budget_exhausted = run.stop = True
                return None
            run.cursor = index + 1
            report.attempts += 1
            report.skipped.pop(name, None)
            run.tries[name] = run.tries.get(name, 0) + 1
            return deployment, permit
        return None

    def _skip_open(self, run: _Run[T], name: str) -> None:
        report = run.report
        report.skipped[name] = BREAKER_OPEN
        wait = self.health[name].breaker.cooldown_remaining()
        if report.breaker_wait_s is None or wait < report.breaker_wait_s:
            report.breaker_wait_s = wait

    def _earliest_ready(self, run: _Run[T]) -> float | None:
        """When the soonest deployment waiting out a backoff may be called again."""
        now = self.clock()
        times = [
            ready
            for name, ready in run.not_before.items()
            if ready > now and name not in run.banned
        ]
        return min(times) if times else None

    def _after_failure(self, run: _Run[T], deployment: Deployment, error: ProviderError) -> None:
        name = deployment.name
        now = self.clock()
        ready = now + self._backoff_s(run.tries.get(name, 1))
        retry_after = error.retry_after_s
        if retry_after is not None:
            ready = max(ready, now + retry_after)
        too_long = retry_after is not None and retry_after * 1000 > self.backoff.max_retry_after_ms
        if too_long or ready + MIN_ATTEMPT_S >= run.plan.deadline:
            run.banned.add(name)
            if retry_after is not None:
                run.report.skipped[name] = RETRY_AFTER
            return
        run.not_before[name] = ready

    def _backoff_s(self, tries: int) -> float:
        """Exponential backoff with "equal jitter": between half and all of the step."""
        step = min(self.backoff.max_ms, self.backoff.base_ms * 2.0 ** (tries - 1)) / 1000.0
        return step / 2 + self.rng.random() * step / 2

    async def _call(
        self, run: _Run[T], deployment: Deployment, permit: int, attempt: Attempt[T]
    ) -> T:
        health = self.health[deployment.name]
        breaker = health.breaker
        plan = run.plan
        health.in_flight += 1
        started = self.clock()
        given = plan.deadline - started
        try:
            result = await attempt(deployment, given)
        except ProviderError as error:
            if error.kind == TIMEOUT and error.retryable:
                self._too_slow(deployment, permit, plan, started, given)
            elif error.deployment_fault:
                breaker.record_failure(permit)
            else:
                breaker.release(permit)
            raise
        except asyncio.CancelledError:
            if run.expired:  # still running at the request's deadline
                self._too_slow(deployment, permit, plan, started, given)
            else:  # a hedge's or tier race's loser, or the caller went away
                breaker.release(permit)
                self._outrun(deployment, plan, started)
            raise
        except BaseException:
            breaker.release(permit)
            raise
        finally:
            health.in_flight -= 1
        breaker.record_success(permit)
        health.latency.record(plan.docs, plan.chars, self.clock() - started)
        return result

    def _outrun(self, deployment: Deployment, plan: FailoverPlan, started: float) -> None:
        """A call cancelled because another answered first took at least this long. When
        that is longer than its predicted p90, the model learns it (a lower bound): a slow
        pro that always loses its tier race must not stay predicted fast forever."""
        latency = self.health[deployment.name].latency
        elapsed = self.clock() - started
        if elapsed > latency.estimate(plan.docs, plan.chars).seconds:
            latency.record(plan.docs, plan.chars, elapsed)

    def _too_slow(
        self, deployment: Deployment, permit: int, plan: FailoverPlan, started: float, given: float
    ) -> None:
        """A call that ran out of time. It counts against the deployment only if it had at
        least the deployment's usual (p90) time for a call this size; a call cut short by a
        tight latency budget says nothing about the deployment's health."""
        health = self.health[deployment.name]
        usual = health.latency.predict(plan.docs, plan.chars)
        if usual is not None and given < usual:
            health.breaker.release(permit)
            return
        health.breaker.record_failure(permit)
        # A lower bound on its latency, but one above its usual p90: the model learns.
        health.latency.record(plan.docs, plan.chars, self.clock() - started)


def _deadline_error(running: list[str]) -> ProviderError | None:
    if not running:
        return None
    return ProviderError(
        f"{', '.join(running)} did not answer within the request's deadline",
        kind=TIMEOUT,
        retryable=True,
    )
