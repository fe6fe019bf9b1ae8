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
