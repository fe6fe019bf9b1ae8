"""Usage events: one record per billed job, per cache saving and per counted refusal.

Everything the usage reports count is one of these events. A request's path only builds
one and hands it on: to the durable ledger's buffer (`EventBuffer`, written in batches by
the gateway, see `policies.money.ledger_pg`), or, without a ledger, to a counter store
(`counts_of` turns it into the counters `policies.money.usage` keeps per day).

An event's id is 16 bytes: 8 random bytes drawn when the process starts and its sequence
number in the process. It is fixed when the event is buffered, so a batch written twice
(a reply lost after the commit, a replay from a spill file) carries the same ids and the
ledger counts it once.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from policies.money.usage import (
    CACHE_HITS,
    COST,
    DOCUMENTS,
    DOWNGRADED,
    REJECTED_BUDGET,
    REJECTED_LIMITS,
    REJECTED_RATE,
    REPLAYED_COST,
    REPLAYED_COUNTER,
    REQUESTS,
    SAVED_COST,
    SAVED_TOKENS,
    SAVED_UNITS,
    SEARCH_UNITS,
    TOKENS,
    TRUNCATED,
    billed_counter,
)

# What happened (the `kind` column): small integers, stable on disk.
SERVED: Final = 1  # a job that went upstream and was billed
SAVED: Final = 2  # what the cache answered for a request instead of the upstream
REJECTED_LIMITS_KIND: Final = 3
REJECTED_RATE_KIND: Final = 4
REJECTED_BUDGET_KIND: Final = 5
TRUNCATED_KIND: Final = 6
DOWNGRADED_KIND: Final = 7
# Billed to the team like a served job, but answered from scores another team's call
# paid for (a team that hides cross-team cache hits): no upstream call was made.
REPLAYED: Final = 8
# The counter a refusal or a flag adds 1 to in the daily counts.
_FLAG_COUNTERS: Final = {
    REJECTED_LIMITS_KIND: REJECTED_LIMITS,
    REJECTED_RATE_KIND: REJECTED_RATE,
    REJECTED_BUDGET_KIND: REJECTED_BUDGET,
    TRUNCATED_KIND: TRUNCATED,
    DOWNGRADED_KIND: DOWNGRADED,
}
# How a served job was priced (`price_kind`), in `policies.money.pricing.KINDS` order; 0: none.
PRICE_KINDS: Final = ("", "search_units", "tokens", "request", "free")


# Not frozen: a frozen dataclass sets each of its 19 fields through object.__setattr__,
# which makes building one (on every billed request) three times dearer.
@dataclass(slots=True)
class UsageEvent:
    at: float  # Unix time
    team: str
    kind: int
    key: str = ""  # the caller's API key id, or `config:<digest prefix>`; "" unknown
    asked: str = ""  # the model (or alias) the caller named
    served: str = ""  # the model that scored
    deployment: str = ""
    price_kind: int = 0
    billed: int = 0  # the figure the price bills by (units, tokens, calls; 1 when free)
    documents: int = 0
    search_units: int = 0
    tokens: int = 0
    calls: int = 0
    cost_micros: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_units: int = 0
    saved_tokens: int = 0
    saved_cost_micros: int = 0


def counts_of(event: UsageEvent) -> dict[str, int]:
    """The daily counters `event` adds to (the counter stores' view of it)."""
    if event.kind == REPLAYED:
        return {**_served(event), REPLAYED_COUNTER: 1, REPLAYED_COST: event.cost_micros}
    if event.kind == SERVED:
        return _served(event)
    if event.kind == SAVED:
        return {
            SAVED_UNITS: event.saved_units,
            SAVED_TOKENS: event.saved_tokens,
            SAVED_COST: event.saved_cost_micros,
            CACHE_HITS: event.cache_hits,
        }
    return {_FLAG_COUNTERS[event.kind]: 1}


def _served(event: UsageEvent) -> dict[str, int]:
    return {
        REQUESTS: 1,
        DOCUMENTS: event.documents,
        SEARCH_UNITS: event.search_units,
        TOKENS: event.tokens,
        COST: event.cost_micros,
        billed_counter(PRICE_KINDS[event.price_kind]): event.billed,
    }


class EventBuffer:
    """Events not yet written, oldest first, bounded: past `max_events` an event is
    refused and counted in `dropped` (never silently lost). Appending costs one deque
    append; nothing here does I/O."""

    def __init__(self, max_events: int, prefix: bytes | None = None) -> None:
        self.max_events = max_events
        self.prefix = prefix if prefix is not None else os.urandom(8)
        self._seq = itertools.count(1)
        # An id is kept as its sequence number until written (cheaper on the request path).
        self._events: deque[tuple[int | bytes, UsageEvent]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def new_id(self) -> bytes:
        """A fresh event id (for an event whose id must be known before it is buffered)."""
        return self._id(next(self._seq))

    def add(self, event: UsageEvent, event_id: bytes | None = None) -> bool:
        """Buffer `event` (under a new id unless given); False (and counted) when full."""
        if len(self._events) >= self.max_events:
            self.dropped += 1
            return False
        self._events.append((event_id or next(self._seq), event))
        return True

    def _id(self, seq: int) -> bytes:
        return self.prefix + seq.to_bytes(8, "big")

    def restore(self, events: Iterable[tuple[int | bytes, UsageEvent]]) -> int:
        """Put back events with ids of their own (read from a spill file); returns how many
        fitted."""
        kept = 0
        for item in events:
            if len(self._events) >= self.max_events:
                self.dropped += 1
                continue
            self._events.append(item)
            kept += 1
        return kept

    def peek(self, limit: int) -> list[tuple[bytes, UsageEvent]]:
        """Up to `limit` oldest events, left in the buffer until `discard` says written."""
        return [
            (self._id(event_id) if isinstance(event_id, int) else event_id, event)
            for event_id, event in itertools.islice(self._events, limit)
        ]

    def discard(self, count: int) -> None:
        for _ in range(min(count, len(self._events))):
            self._events.popleft()

    def oldest_at(self) -> float | None:
        return self._events[0][1].at if self._events else None
