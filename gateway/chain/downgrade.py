"""The downgrade layer: serve an over-budget alias request by its fast tier.

The team's account raises `Downgrade` when a team over its budget may be served by the fast tier
of the alias it asked for. This layer, outside the cache, runs the whole inner chain
again with new facts (the fast model, admitted past the budget): the cache looks up and
stores under the fast model's keys, the account prices the fast model, and the answer
says which model scored. Nothing inside ever sees a model change under its feet.
"""

from __future__ import annotations

from typing import Protocol

from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.state.accounts import Downgrade
from gateway.state.usage import Payer


class DowngradeBook(Protocol):
    async def downgraded(self, payer: Payer, model: str, limit: str) -> None: ...


class DowngradeLayer:
    def __init__(self, inner: Scorer, book: DowngradeBook) -> None:
        self.inner = inner
        self.book = book

    async def score(self, job: ScoreJob) -> Scored:
        try:
            return await self.inner.score(job)
        except Downgrade as signal:
            facts = job.facts.serving(signal.model, over_budget=signal.limit)
            run = job.rerun(facts)
            scored = await self.inner.score(run)
            job.report.warnings.append(signal.warning)
            job.report.adopt(run.report, facts.model)
            await self.book.downgraded(facts.payer, facts.model, signal.limit)
            return scored
