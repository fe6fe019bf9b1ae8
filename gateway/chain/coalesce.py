"""Request coalescing, private to the cache layer: concurrent requests never send the
same document upstream twice.

Every document being scored upstream belongs to a flight here. A request that needs a
document already in flight joins that flight instead of sending it again, and sends
only the rest; so identical concurrent requests make one upstream call (all of a
follower's documents are in the leader's flight) and overlapping ones send only what
nobody is fetching yet.

A flight runs in a task of its own, with a job of its own (same facts, its own report),
so a caller that goes away does not cancel it for the others, and the leader's report
is never shared with its followers. When it fails, each follower fetches its documents
itself, once and without joining again: the leader's error may be its own (its deadline,
its team's budget, a downgrade) and must not become theirs. Nobody waits past its own
deadline.

With a shared store (Redis), a flight also coalesces across processes (`Fleet`): before
calling upstream it takes a short lease on the digest of its documents, one `SET NX`
round trip. If another process holds that lease, the flight waits for that process's
scores to land in the store, bounded by its deadline and `cache.fleet_max_wait_ms`,
and calls upstream itself if they do not come (the holder failed or is too slow).
Only a flight over exactly the same documents joins across processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.chain.job import Facts, Report, Scored, ScoreJob, Scorer
from gateway.errors import UpstreamUnavailable
from gateway.observe import tracing
from gateway.observe.metrics import Metrics
from policies.cache import SharedStore

# Stores the scores of a flight before it is released (the cache fill), dropping the
# flight's fleet lease (when it holds one) in the same round trip.
Writer = Callable[[Sequence[bytes], Sequence[float], bytes | None], Awaitable[None]]
_MAX_LEASE_S = 30.0
SERVED, TIMED_OUT, HOLDER_GONE = "served", "timed_out", "holder_gone"


@dataclass(frozen=True)
class Fleet:
    """Single flight across processes, through the shared store's leases."""

    store: SharedStore
    max_wait_s: float
    poll_s: float
    metrics: Metrics  # rerank_fleet_waits_total{outcome}, rerank_fleet_waiting

    async def take(self, keys: Sequence[bytes], facts: Facts) -> tuple[bytes, bool | None]:
        lease = hashlib.sha256(b"".join(sorted(keys))).digest()[:16]
        ttl_s = min(_MAX_LEASE_S, max(0.0, facts.remaining_s()) + 1.0)
        return lease, await self.store.take_lease(lease, ttl_s)

    async def wait(self, keys: Sequence[bytes], lease: bytes, facts: Facts) -> list[float] | None:
        """The scores another process is fetching, or None: fetch them yourself."""
        # Leave at least half of what is left of the deadline for a call of its own.
        until = time.monotonic() + min(self.max_wait_s, max(0.0, facts.remaining_s()) / 2)
        with self.metrics.fleet_waiting.track_inprogress():
            return await self._poll(keys, lease, until)

    async def _poll(self, keys: Sequence[bytes], lease: bytes, until: float) -> list[float] | None:
        while True:
            await asyncio.sleep(max(0.0, min(self.poll_s, until - time.monotonic())))
            found, held = await self.store.peek(keys, lease)
            if all(score is not None for score in found):
                self.metrics.fleet_waits.labels(SERVED).inc()
                return [score for score in found if score is not None]
            if not held or time.monotonic() >= until:
                self.metrics.fleet_waits.labels(HOLDER_GONE if not held else TIMED_OUT).inc()
                return None


@dataclass(eq=False, slots=True)
class Flight:
    """One upstream call over some documents, which later requests may join."""

    keys: list[bytes]
    job: ScoreJob
    # Resolves to the scores (in the order of `keys`) once they are known, or None when
    # the call failed. A list, not a map by key: only a request that joined needs that,
    # and it builds its own (most flights are joined by nobody).
    ready: asyncio.Future[Sequence[float] | None]
    task: asyncio.Task[Scored] = field(init=False)
    remote: bool = False  # another process fetched the scores (nothing sent from here)
    alone: bool = False  # never waits for another process's call (calls upstream itself)
    # The keys this flight registered for others to join (none once it is released).
    registered: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Fetched:
    scores: dict[bytes, float] = field(default_factory=dict)
    search_units: int = 0  # billed for the calls this request made
    tokens: int = 0
    calls: int = 0
    sent: set[bytes] = field(default_factory=set)  # keys this request sent upstream

    def add(self, flight: Flight, scored: Scored, report: Report) -> None:
        self.scores.update(zip(flight.keys, scored.scores, strict=True))
        self.search_units += scored.search_units
        self.tokens += scored.tokens
        self.calls += scored.calls
        self.sent.update(flight.keys)
        report.add_upstream(flight.job.report)


class Flights:
    def __init__(self, inner: Scorer, fleet: Fleet | None = None) -> None:
        self.inner = inner
        self.fleet = fleet
        self._in_flight: dict[bytes, Flight] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop holds tasks only weakly

    async def fetch(
        self,
        job: ScoreJob,
        wanted: dict[bytes, str],
        *,
        join: bool,
        write: Writer,
        alone: bool = False,
    ) -> Fetched:
        """Scores of `wanted` (key -> document text); `join=False` sends every document,
        `alone` too and waits for no other process's call either."""
        joined: dict[Flight, list[bytes]] = {}
        lead: dict[bytes, str] = {}
        if not join or self._in_flight.keys().isdisjoint(wanted):
            lead = wanted  # the usual case, checked in C: nothing of it is in flight
        else:
            for key, doc in wanted.items():
                flight = self._in_flight.get(key)
                if flight is None:
                    lead[key] = doc
                else:
                    joined.setdefault(flight, []).append(key)
        fetched = Fetched()
        own = self._launch(job, lead, write, register=True, alone=alone) if lead else None
        # A child span only when this request waits for others' flights.
        waiting = tracing.span("coalesce.wait", joined=len(joined)) if joined else None
        with waiting or tracing.UNTRACED:
            await _wait(job.facts, [f.ready for f in joined], own)
        if own is not None and own.remote:
            fetched.scores.update(zip(own.keys, own.task.result().scores, strict=True))
        elif own is not None:
            fetched.add(own, own.task.result(), job.report)
        retry: dict[bytes, str] = {}
        for flight, keys in joined.items():
            found = flight.ready.result()
            if found is None:
                retry.update((key, wanted[key]) for key in keys)
                continue
            scores = dict(zip(flight.keys, found, strict=True))
            fetched.scores.update((key, scores[key]) for key in keys)
            job.report.deployment = job.report.deployment or flight.job.report.deployment
        if retry:
            again = self._launch(job, retry, write, register=False)
            await _wait(job.facts, (), again)
            fetched.add(again, again.task.result(), job.report)
        return fetched

    def _launch(
        self,
        job: ScoreJob,
        docs: dict[bytes, str],
        write: Writer,
        *,
        register: bool,
        alone: bool = False,
    ) -> Flight:
        loop = asyncio.get_running_loop()
        flight = Flight(list(docs), job.subset(list(docs.values())), loop.create_future())
        flight.alone = alone
        if register:
            in_flight = self._in_flight
            if in_flight.keys().isdisjoint(docs):
                flight.registered = flight.keys
                in_flight.update(dict.fromkeys(flight.keys, flight))
            else:  # a no-cache request may repeat a document in flight: leave that one be
                flight.registered = [key for key in flight.keys if key not in in_flight]
                in_flight.update(dict.fromkeys(flight.registered, flight))
        flight.task = asyncio.create_task(self._fly(flight, write))
        self._tasks.add(flight.task)
        flight.task.add_done_callback(lambda _: self._release(flight))
        return flight

    async def _fly(self, flight: Flight, write: Writer) -> Scored:
        try:
            scored, lease = await self._score(flight)
        except BaseException:
            self._release(flight)  # followers see None and fetch for themselves
            raise
        if not flight.ready.done():
            if len(scored.scores) != len(flight.keys):  # checked as the map by key was
                raise ValueError(f"{len(scored.scores)} scores for {len(flight.keys)} documents")
            flight.ready.set_result(scored.scores)
        # Released only once written (by the done callback), so a request arriving
        # meanwhile joins the finished flight instead of missing the cache and sending again.
        if not flight.remote:  # scores fetched elsewhere are in the shared store already
            await write(flight.keys, scored.scores, lease)
        return scored

    async def _score(self, flight: Flight) -> tuple[Scored, bytes | None]:
        """Score the flight's job; with a fleet, join another process's call for the same
        documents if one is under way. Returns the lease this process holds, if any."""
        fleet = self.fleet
        if fleet is None:
            return await self.inner.score(flight.job), None
        facts = flight.job.facts
        lease, taken = await fleet.take(flight.keys, facts)
        if taken is False and not flight.alone:
            scores = await fleet.wait(flight.keys, lease, facts)
            if scores is not None:
                flight.remote = True
                return Scored(scores, 0), None
        if not taken:  # the store is unavailable, or the holder did not deliver
            return await self.inner.score(flight.job), None
        try:
            return await self.inner.score(flight.job), lease
        except BaseException:
            self._background(fleet.store.drop_lease(lease))  # waiters stop waiting
            raise

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, flight: Flight) -> None:
        if not flight.ready.done():
            flight.ready.set_result(None)
        # Only this flight ever holds its registered keys, so they go without a check;
        # emptied at once, as a flight is released twice when it fails.
        registered, flight.registered = flight.registered, []
        deque(map(self._in_flight.pop, registered), maxlen=0)  # popped in C
        task = getattr(flight, "task", None)  # unset while the flight is being launched
        if task is not None and task.done():
            self._tasks.discard(task)
            if not task.cancelled():
                task.exception()  # mark retrieved: its caller may have gone away


async def _wait(facts: Facts, joined: Iterable[asyncio.Future], own: Flight | None) -> None:
    """Wait for all, within the caller's deadline; this request's own failure ends it early.

    `asyncio.wait` never cancels what it waits for, so a cancelled caller leaves the
    shared call running for the others.
    """
    waitables: set[asyncio.Future] = set(joined)
    timeout = max(0.0, facts.remaining_s())
    if own is not None and not waitables:  # the usual miss: only its own flight
        await _wait_one(own.task, timeout)
        pending = not own.task.done()
        if not pending:
            own.task.result()  # this request's own upstream error ends it at once
    else:
        if own is not None:
            waitables.add(own.task)
        done, pending_set = await asyncio.wait(
            waitables, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
        )
        if own is not None and own.task in done:
            own.task.result()  # this request's own upstream error ends it at once
        pending = bool(pending_set)
    if pending:  # only `own` can raise (joined flights resolve to None): the deadline passed
        raise UpstreamUnavailable(  # a model's fallback may answer instead
            504,
            f"model {facts.model!r}: the request deadline passed while waiting for the upstream",
        )


async def _wait_one(task: asyncio.Future, timeout: float) -> None:
    """`asyncio.wait({task}, timeout=timeout)` for one task, as that does it (a waiter
    woken by the task or the timer; never cancels the task, so a cancelled caller leaves
    it running for others) without its general bookkeeping: ~2 us less per miss."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
