"""The scoring chain: how the documents of one request get their scores.

A `Scorer` takes a `ScoreJob` (a query and the documents that still need scores)
and returns one score per document. Layers wrap one another, each with one job;
the innermost is the `Router` (gateway.chain.dispatch), which calls the model's deployments:

    [fallback] -> [tier race] -> [cache] -> [coalescing] -> [limits and budget] -> Router

A layer that answers some documents itself (the cache) passes only the rest inward,
so `search_units` always counts what really went upstream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from policies.tier_choice import TierBackup


@dataclass(slots=True)
class RequestContext:
    """What the layers know about the request, and what they report back."""

    request_id: str
    team: str
    model: str  # the concrete gateway model being served
    deadline: float  # time.monotonic() by which the answer must be ready
    warnings: list[str] = field(default_factory=list)
    cache_control: frozenset[str] = frozenset()
    alias: str | None = None  # the tiered alias the caller named, if any
    # Filled in by the layers:
    deployment: str | None = None  # what served the upstream part, if any
    upstream_s: float = 0.0
    attempts: int = 0
    cache_status: str | None = None
    backup: TierBackup | None = None  # a tiered alias's fast tier, if pro runs late

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class ScoreJob:
    ctx: RequestContext
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None = None

    def subset(self, documents: Sequence[str]) -> ScoreJob:
        return replace(self, documents=documents)


@dataclass(frozen=True, slots=True)
class Scored:
    scores: list[float]  # aligned with ScoreJob.documents
    search_units: int  # billed for this job's upstream calls; 0 when none was made


class Scorer(Protocol):
    async def score(self, job: ScoreJob) -> Scored: ...
