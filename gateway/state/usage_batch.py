"""Group commit for usage records: concurrent records written in one store call per bucket.

Every billed job and every cache saving is one usage record, and with the counters in
Redis each record was one script run (a round trip through redis-py) on the request
path: on a Redis cache hit that write cost about as much as the lookup itself. Here a
record joins the batch being gathered; one writer takes the batch whole, sums the
records of each (team, day, model, deployment) bucket and writes each bucket once. A
record's caller still waits until its bucket is written (or fails), so a request's
usage is recorded when its answer goes out, as before, and a failure reaches every
caller whose record it held (each logs and counts it, as before). With one request at a
time, a batch holds one record; under load, as many as arrived during the last write.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

from policies.money.usage import Slot, UsageStore

_Bucket = tuple[str, str, str, str]  # team, day, model, deployment


class _Entry:
    __slots__ = ("counts", "done")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.counts: Counter[str] = Counter()
        self.done = done


class GroupCommit:
    """A `UsageStore` in front of another, writing concurrent records together."""

    def __init__(self, inner: UsageStore) -> None:
        self.inner = inner
        self._gathering: dict[_Bucket, _Entry] = {}
        self._writer: asyncio.Task[None] | None = None

    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        bucket = (team, day, model, deployment)
        entry = self._gathering.get(bucket)
        if entry is None:
            entry = self._gathering[bucket] = _Entry(asyncio.get_running_loop().create_future())
        entry.counts.update(counts)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        # Shielded: a caller that goes away leaves the batch to be written for the others.
        await asyncio.shield(entry.done)

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        return await self.inner.read(team, days)

    async def _write(self) -> None:
        try:
            while self._gathering:
                batch, self._gathering = self._gathering, {}
                await asyncio.gather(*(self._one(b, e) for b, e in batch.items()))
        finally:
            self._writer = None

    async def _one(self, bucket: _Bucket, entry: _Entry) -> None:
        try:
            await self.inner.add(*bucket, entry.counts)
        except Exception as exc:  # every caller whose record it held sees it
            if not entry.done.done():
                entry.done.set_exception(exc)
                entry.done.exception()  # retrieved: no caller may be left to read it
        except BaseException:  # the writer was cancelled (shutdown): so are the callers
            entry.done.cancel()
            raise
        else:
            if not entry.done.done():
                entry.done.set_result(None)
