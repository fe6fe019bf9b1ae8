"""What flows through the scoring chain: a job, the facts it carries and the report it fills.

A `Scorer` takes a `ScoreJob` (a query and the documents that still need scores) and
returns one score per document. The job carries two things, kept apart on purpose:

- `Facts`: what the request *is* (team, model, alias, deadline, cache control, request id).
  Frozen: a layer cannot change a fact that the layers around it have already acted on
  (the cache has keyed by the model, the budget has priced it). A layer that needs another
  model (tier race, budget downgrade) makes a new job with new facts (`rerun`), runs the
  inner chain again and `adopt`s what that run reports.
- `Report`: what *happened* (deployment, upstream time, attempts, cache status, warnings).
  Every job has its own; a layer that runs an inner job of its own merges its report back.

The order of the layers is declared in `gateway.chain.order`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.state.usage import Payer
from policies.money.pricing import Usage
from policies.routing.tier_choice import TierBackup
from providers.types import Span, SpanOptions, UpstreamMeta


@dataclass(frozen=True, slots=True)
class Facts:
    """What the layers know about the request; fixed once resolved."""

    request_id: str
    team: str
    model: str  # the concrete gateway model that scores this job
    deadline: float  # time.monotonic() by which the answer must be ready
    cache_control: frozenset[str] = frozenset()
    alias: str | None = None  # the tiered alias the caller named, if any
    backup: TierBackup | None = None  # an alias's fast tier, should pro run late
    over_budget: str | None = None  # the budget limit it is served past (a downgrade)
    key: str = ""  # the caller's key id, for the usage record
    asked: str = ""  # the model or alias the caller named (the model when empty)

    @property
    def payer(self) -> Payer:
        """Whose account this job is charged to, for the usage record."""
        return Payer(self.team, self.key, self.asked or self.model)

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def serving(self, model: str, *, over_budget: str | None = None) -> Facts:
        """The same request served by `model` (no tier backup: that choice is made)."""
        return replace(
            self, model=model, backup=None, over_budget=over_budget or self.over_budget
        )


@dataclass(slots=True)
class Report:
    """What the layers did for one job; filled in as it passes through them."""

    warnings: list[str] = field(default_factory=list)
    model: str | None = None  # set when a rerun's model scored instead of `Facts.model`
    deployment: str | None = None  # what served the upstream part, if anything did
    upstream_s: float = 0.0
    attempts: int = 0
    cache_status: str | None = None
    # What the upstream calls made for this job said beside their scores (Cohere's meta):
    # passed on in the answer; nothing when no call was made (a cache hit).
    upstream: UpstreamMeta | None = None

    def adopt(self, run: Report, model: str) -> None:
        """Take over what a rerun with other facts did: its model served this request."""
        self.warnings.extend(run.warnings)
        self.model = run.model or model
        self.deployment = run.deployment
        self.upstream_s += run.upstream_s
        self.attempts += run.attempts
        self.cache_status = run.cache_status
        self.note_upstream(run.upstream)

    def add_upstream(self, run: Report) -> None:
        """Take over the upstream part of an inner job over some of the documents."""
        self.warnings.extend(run.warnings)
        self.deployment = run.deployment or self.deployment
        self.upstream_s += run.upstream_s
        self.attempts += run.attempts
        self.note_upstream(run.upstream)

    def note_upstream(self, meta: UpstreamMeta | None) -> None:
        """Add what one more upstream answer said: flags set by any, tokens summed; its
        warnings join the answer's."""
        if meta is None:
            return
        self.warnings.extend(meta.warnings)
        self.upstream = merge_meta(self.upstream, meta)


def merge_meta(a: UpstreamMeta | None, b: UpstreamMeta) -> UpstreamMeta:
    """Two answers' meta as one (their warnings are the caller's to keep: not merged)."""
    if a is None:
        return UpstreamMeta(b.is_deprecated, b.is_experimental, (), b.input_tokens, b.output_tokens)
    return UpstreamMeta(
        _any(a.is_deprecated, b.is_deprecated),
        _any(a.is_experimental, b.is_experimental),
        (),
        _sum(a.input_tokens, b.input_tokens),
        _sum(a.output_tokens, b.output_tokens),
    )


def _any(a: bool | None, b: bool | None) -> bool | None:
    return None if a is None and b is None else bool(a or b)


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass(frozen=True, slots=True)
class ScoreJob:
    facts: Facts
    query: str
    documents: Sequence[str]
    max_tokens_per_doc: int | None = None
    report: Report = field(default_factory=Report)
    priority: int | None = None  # the caller's, for upstreams that take it
    spans: SpanOptions | None = None  # Rerank 5's relevant spans, when asked for
    # Scores known already, one per document, that dispatch answers as an upstream call
    # would be answered (a deployment, its usual latency, billed): other teams' cache
    # entries, for a team that must not learn of them (`gateway.chain.cache`).
    replay: Sequence[float] | None = None

    def subset(self, documents: Sequence[str]) -> ScoreJob:
        """Some of the documents, same facts, a report of its own."""
        return replace(self, documents=documents, report=Report(), replay=None)

    def replaying(self, documents: Sequence[str], scores: Sequence[float]) -> ScoreJob:
        """Some of the documents with their known scores (`replay`), a report of its own."""
        return replace(self, documents=documents, report=Report(), replay=scores)

    def rerun(self, facts: Facts) -> ScoreJob:
        """The same documents under other facts, with a report of its own."""
        return replace(self, facts=facts, report=Report())


@dataclass(frozen=True, slots=True)
class Scored:
    scores: list[float]  # aligned with ScoreJob.documents
    search_units: int  # billed for this job's upstream calls; 0 when none was made
    # Tokens of this job's upstream calls (the upstream's figure, else the estimate) and how
    # many calls it made: what token-priced and per-request prices bill.
    tokens: int = 0
    calls: int = 0
    spans: list[tuple[Span, ...]] | None = None  # per document, when the job asked for them

    @property
    def usage(self) -> Usage:
        return Usage(self.search_units, self.tokens, self.calls)


class Scorer(Protocol):
    async def score(self, job: ScoreJob) -> Scored: ...
