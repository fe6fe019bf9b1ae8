"""Split one scoring call into sub-batches an upstream accepts, sent concurrently.

Self-hosted servers cap the documents per request (TEI: 32 by default). Pointwise
cross-encoders score each (query, document) pair on its own, so a call can be cut into
slices, scored at once, and stitched back by offset; listwise rerankers must not be split.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from providers.types import UpstreamResult

ScoreSlice = Callable[[Sequence[str]], Awaitable[UpstreamResult]]


async def in_batches(
    documents: Sequence[str], size: int | None, score: ScoreSlice
) -> UpstreamResult:
    """Score `documents` in slices of at most `size` (None: one call) and merge by offset.

    The slices run concurrently, each under the caller's timeout, so the whole call ends
    within it. The first failure cancels the other slices and is raised as is.
    """
    if size is None or len(documents) <= size:
        return await score(documents)
    tasks = [
        asyncio.ensure_future(score(documents[start : start + size]))
        for start in range(0, len(documents), size)
    ]
    try:
        parts = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    scores: list[float] = []
    for part in parts:  # gather keeps the order of the slices: offsets line up
        scores.extend(part.scores)
    return UpstreamResult(
        scores=scores,
        search_units=_total(p.search_units for p in parts),
        tokens=_total(p.tokens for p in parts),
        upstream_request_id=next(
            (p.upstream_request_id for p in parts if p.upstream_request_id), None
        ),
    )


def _total(figures: Iterable[int | None]) -> int | None:
    """The sum of what the slices reported (None when none reported anything)."""
    reported = [f for f in figures if f is not None]
    return sum(reported) if reported else None
