"""The budget layer: one reservation per job for what goes upstream, settled afterwards.

It sits inside the cache (cache hits are neither rate limited nor billed) and outside
dispatch (one reservation however many deployments, retries and hedges dispatch tries,
so failover is never rate limited). The decisions are the team account's
(`gateway.state.accounts`); this layer only brackets the inner call with them, handing
the team's account what the call used (search units, tokens, calls): it prices that in
micro-dollars, whatever unit the serving deployment bills.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.state.accounts import Admission, Claim
from policies.money.pricing import Usage


class Account(Protocol):
    """What the budget layer needs of the team accounts."""

    async def admit(self, claim: Claim) -> Admission | None: ...

    async def settle(
        self,
        admission: Admission | None,
        claim: Claim,
        deployment: str | None,
        usage: Usage,
        replayed: bool = False,
    ) -> None: ...

    async def refund(self, admission: Admission | None) -> None: ...


class BudgetLayer:
    def __init__(self, inner: Scorer, accounts: Account) -> None:
        self.inner = inner
        self.accounts = accounts

    async def score(self, job: ScoreJob) -> Scored:
        facts = job.facts
        claim = Claim(
            facts.payer,
            facts.model,
            facts.alias,
            facts.over_budget,
            job.query,
            job.documents,
            job.max_tokens_per_doc,
        )
        admission = await self.accounts.admit(claim)
        try:
            scored = await self.inner.score(job)
        except BaseException:
            await asyncio.shield(self.accounts.refund(admission))
            raise
        # A replay (scores another team's request paid for, billed to this one as a call:
        # see gateway.chain.cache) is settled like a call and recorded as a replay.
        replayed = job.replay is not None
        await self.accounts.settle(
            admission, claim, job.report.deployment, scored.usage, replayed
        )
        return scored
