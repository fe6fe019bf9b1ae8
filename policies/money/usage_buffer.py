"""Usage records that survive a Redis outage or failover: kept in memory, written later.

A record that cannot be written (the store raises StoreUnavailable) is merged into a
pending bucket of this process, and the pending buckets are written ahead of the next
record that gets through, so a Sentinel failover or a short outage loses no usage: the
counts land a little late. The store still raises for the failed record, so the caller
counts and logs the outage. Pending buckets are bounded (`max_pending`; beyond it the
oldest are dropped and counted in `dropped`) and held by one process: a process killed
during an outage loses what it held.

A record whose write reached Redis but whose reply was lost (a timeout) is not kept, as it
may have been counted; the client only retries connection errors for the same reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

from policies.money.quota import StoreUnavailable
from policies.money.usage import Slot, UsageStore

_Bucket = tuple[str, str, str, str]  # team, day, model, deployment


class BufferedUsageStore:
    def __init__(self, inner: UsageStore, max_pending: int = 10_000) -> None:
        self.inner = inner
        self.max_pending = max_pending
        self.pending: dict[_Bucket, Counter[str]] = {}
        self.dropped = 0
        self._flushing = asyncio.Lock()

    async def add(
        self, team: str, day: str, model: str, deployment: str, counts: Mapping[str, int]
    ) -> None:
        if self.pending:
            await self.flush()
        try:
            await self.inner.add(team, day, model, deployment, counts)
        except StoreUnavailable as exc:
            if not _maybe_applied(exc):
                self._keep((team, day, model, deployment), counts)
            raise

    async def flush(self) -> None:
        """Write the pending buckets; stop at the first failure (they stay pending)."""
        if self._flushing.locked():
            return  # another request is writing them already
        async with self._flushing:
            while self.pending:
                bucket, counts = next(iter(self.pending.items()))
                try:
                    await self.inner.add(*bucket, counts)
                except StoreUnavailable as exc:
                    if _maybe_applied(exc):
                        del self.pending[bucket]
                    return
                del self.pending[bucket]

    async def read(self, team: str, days: Sequence[str]) -> dict[Slot, Counter[str]]:
        return await self.inner.read(team, days)

    def _keep(self, bucket: _Bucket, counts: Mapping[str, int]) -> None:
        if bucket not in self.pending and len(self.pending) >= self.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self.dropped += 1
        self.pending.setdefault(bucket, Counter()).update(counts)


def _maybe_applied(exc: StoreUnavailable) -> bool:
    """A timeout means the script may have run: keeping the record could count it twice."""
    return isinstance(exc.__cause__, TimeoutError) or "Timeout" in str(exc)
