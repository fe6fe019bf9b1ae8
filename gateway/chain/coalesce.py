"""Request coalescing: concurrent requests never send the same document upstream twice.

Every document being scored upstream has a future here. A request that needs a document
already in flight waits for that future instead of sending it again, and sends only the
rest; so identical concurrent requests make one upstream call (all of a follower's
documents are in the leader's flight) and overlapping ones send only what nobody is
fetching yet. Per-document flights subsume a single flight keyed by the whole job.

The upstream call runs in a task of its own, so a caller that goes away does not cancel
it for the others. When it fails, each follower fetches its documents itself, once and
without joining again: the leader's error may be its own (its deadline, its team's
budget) and must not become theirs. Nobody waits past its own deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.chain.job import RequestContext, Scored, ScoreJob, Scorer
from gateway.errors import UpstreamUnavailable
from gateway.observe import tracing

# Stores the scores of a flight before it is released (the cache fill).
Writer = Callable[[Sequence[bytes], Sequence[float]], Awaitable[None]]
# A flight's future holds the document's score, or None when the flight failed.
Slot = asyncio.Future[float | None]


@dataclass(slots=True)
class Fetched:
    scores: dict[bytes, float] = field(default_factory=dict)
    search_units: int = 0  # billed for the calls this request made
    sent: set[bytes] = field(default_factory=set)  # keys this request sent upstream

    def add(self, keys: Sequence[bytes], scored: Scored) -> None:
        self.scores.update(zip(keys, scored.scores, strict=True))
        self.search_units += scored.search_units
        self.sent.update(keys)


class Flights:
    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self._in_flight: dict[bytes, Slot] = {}
        self._tasks: set[asyncio.Task[Scored]] = set()

    async def fetch(
        self, job: ScoreJob, wanted: dict[bytes, str], *, join: bool, write: Writer
    ) -> Fetched:
        """Scores of `wanted` (key -> document text); `join=False` sends every document."""
        followed: dict[bytes, Slot] = {}
        lead: dict[bytes, str] = {}
        for key, doc in wanted.items():
            slot = self._in_flight.get(key) if join else None
            if slot is None:
                lead[key] = doc
            else:
                followed[key] = slot
        fetched = Fetched()
        task = self._launch(job, lead, write, register=True) if lead else None
        # A child span only when this request waits for others' flights.
        waiting = tracing.span("coalesce.wait", joined=len(followed)) if followed else None
        with waiting or tracing.UNTRACED:
            await _wait(job.ctx, [*([task] if task else []), *followed.values()], task)
        if task is not None:
            fetched.add(list(lead), task.result())
        retry = {}
        for key, slot in followed.items():
            score = None if slot.cancelled() else slot.result()
            if score is None:
                retry[key] = wanted[key]
            else:
                fetched.scores[key] = score
        if retry:
            task = self._launch(job, retry, write, register=False)
            await _wait(job.ctx, [task], task)
            fetched.add(list(retry), task.result())
        return fetched

    def _launch(
        self, job: ScoreJob, docs: dict[bytes, str], write: Writer, *, register: bool
    ) -> asyncio.Task[Scored]:
        slots: dict[bytes, Slot] = {}
        if register:
            loop = asyncio.get_running_loop()
            for key in docs:
                if key not in self._in_flight:  # a no-cache request may repeat one in flight
                    slots[key] = self._in_flight[key] = loop.create_future()
        task = asyncio.create_task(
            self._fly(job.subset(list(docs.values())), list(docs), slots, write)
        )
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._landed(done, slots))
        return task

    async def _fly(
        self, job: ScoreJob, keys: list[bytes], slots: dict[bytes, Slot], write: Writer
    ) -> Scored:
        try:
            scored = await self.inner.score(job)
        except BaseException:
            self._release(slots)  # followers see None and fetch for themselves
            raise
        try:
            for key, score in zip(keys, scored.scores, strict=True):
                slot = slots.get(key)
                if slot is not None and not slot.done():
                    slot.set_result(score)
            await write(keys, scored.scores)
        finally:
            # Released only once written, so a request arriving meanwhile joins the
            # finished flight instead of missing the cache and sending again.
            self._release(slots)
        return scored

    def _release(self, slots: dict[bytes, Slot]) -> None:
        for key, slot in slots.items():
            if not slot.done():
                slot.set_result(None)
            if self._in_flight.get(key) is slot:
                del self._in_flight[key]

    def _landed(self, task: asyncio.Task[Scored], slots: dict[bytes, Slot]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            self._release(slots)  # it may have been cancelled before it ran: free its waiters
        else:
            task.exception()  # mark retrieved: its caller may have gone away


async def _wait(
    ctx: RequestContext, waitables: Iterable[asyncio.Future], own: asyncio.Task[Scored] | None
) -> None:
    """Wait for all, within the caller's deadline; this request's own failure ends it early.

    `asyncio.wait` never cancels what it waits for, so a cancelled caller leaves the
    shared call running for the others.
    """
    done, pending = await asyncio.wait(
        set(waitables), timeout=max(0.0, ctx.remaining_s()), return_when=asyncio.FIRST_EXCEPTION
    )
    if own is not None and own in done:
        own.result()  # this request's own upstream error ends it at once
    if pending:  # only `own` can raise (slots hold None on failure): the deadline passed
        raise UpstreamUnavailable(  # a model's fallback may answer instead
            504,
            f"model {ctx.model!r}: the request deadline passed while waiting for the upstream",
        )
