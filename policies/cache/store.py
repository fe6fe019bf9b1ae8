"""The contract every score store keeps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

# Called with (backend, exception) when a store could not answer; the store itself
# never raises for that: a failed read is a miss and a failed write is dropped.
ErrorHook = Callable[[str, BaseException], None]


class ScoreStore(Protocol):
    backend: str  # "memory", "redis" or "tiered"; used as a metric label

    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        """The score of each key, None where unknown; `ttl_s` bounds copies made while reading
        (the tiered store's memory level)."""
        ...

    async def set_many(self, keys: Sequence[bytes], scores: Sequence[float], ttl_s: float) -> None:
        """Store each key's score for `ttl_s` seconds."""
        ...

    async def close(self) -> None: ...


class SharedStore(ScoreStore, Protocol):
    """A store shared by every process (Redis): it also holds fleet-wide flight leases."""

    async def set_many(  # type: ignore[override]
        self,
        keys: Sequence[bytes],
        scores: Sequence[float],
        ttl_s: float,
        release: bytes | None = None,
    ) -> None:
        """Store the scores and, in the same round trip, drop the lease `release`."""
        ...

    async def take_lease(self, lease: bytes, ttl_s: float) -> bool | None:
        """True: take it (this process fetches); False: held elsewhere; None: unavailable."""
        ...

    async def peek(self, keys: Sequence[bytes], lease: bytes) -> tuple[list[float | None], bool]:
        """The scores of `keys` and whether `lease` is still held."""
        ...

    async def drop_lease(self, lease: bytes) -> None: ...
