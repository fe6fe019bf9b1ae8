"""Deadline-aware tier fallback: when a tiered alias chose pro and pro runs late, start
the fast tier too (at the point where fast can still finish within the budget) and
answer with whichever is first. Also starts fast at once if pro fails outright.
When the backup answers, `meta.warnings` says so and
`rerank_tier_backup_answers_total{alias,model}` counts it.

It sits outside the downgrade, cache and budget layers: each tier runs the inner chain
as a job of its own, with facts naming that tier's model, so caches and budgets see one
consistent model; the winner's report is adopted. Counted in `rerank_hedges_total{model=<alias>}`.
"""

from __future__ import annotations

import time

from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.errors import UpstreamUnavailable
from gateway.observe import events, tracing
from gateway.observe.metrics import Metrics
from policies.routing.failover import HEDGE_FAILED, HEDGE_LOST, HEDGE_WON
from policies.routing.first_wins import Race
from policies.routing.tier_choice import backup_warning

PRIMARY, BACKUP = "primary", "backup"


class TierRace:
    def __init__(self, inner: Scorer, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.events = events.Events(metrics)

    async def score(self, job: ScoreJob) -> Scored:
        backup = job.facts.backup
        if backup is None:
            return await self.inner.score(job)
        race: Race[str, Scored] = Race()
        forks: dict[str, ScoreJob] = {}

        def start(which: str, model: str) -> None:
            forks[which] = job.rerun(job.facts.serving(model))
            race.start(which, tracing.leg(which, model, self.inner.score(forks[which])))

        start(PRIMARY, job.facts.model)
        switch_at = time.monotonic() + backup.after_s
        may_switch = True
        outcome = HEDGE_LOST
        error: BaseException | None = None
        try:
            while race.running or may_switch:
                if not may_switch:
                    done = await race.next(None)
                elif race.running:
                    done = await race.next(switch_at - time.monotonic())
                else:
                    done = None  # pro failed: no reason to wait for the switch point
                if done is None:
                    may_switch = False
                    if job.facts.remaining_s() > 0:
                        start(BACKUP, backup.model)
                        self.events.repeating(events.TIER_BACKUP, backup.alias, alias=backup.alias)
                    continue
                which, future = done
                failure = future.exception()
                if failure is None:
                    outcome = HEDGE_WON if which == BACKUP else HEDGE_LOST
                    fork = forks[which]
                    if which == BACKUP:
                        warning = backup_warning(backup, job.facts.model, error is not None)
                        fork.report.warnings.append(warning)
                        self.metrics.tier_backup_answers.labels(backup.alias, backup.model).inc()
                    job.report.adopt(fork.report, fork.facts.model)
                    return future.result()
                error = failure
                if which == BACKUP:
                    outcome = HEDGE_FAILED
                if not isinstance(failure, UpstreamUnavailable):
                    raise failure  # the caller's mistake: the other tier would refuse it too
        finally:
            await race.cancel()
            if BACKUP in forks:
                self.metrics.hedges.labels(backup.alias, outcome).inc()
        assert error is not None
        raise error
