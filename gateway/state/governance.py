"""Cost governance, built once from config: who may spend what, and the record of it.

`build_governance` makes the pieces and hands each to the code that uses it; nothing holds
the whole set at run time:

- `Overfetch` (the pipeline): over-fetch limits after parsing.
- `Accounts` (the budget and downgrade layers): rate limits and budgets, reserve/settle.
- `UsageRecorder` (accounts, over-fetch limits, the cache layer): usage events.
- `UsageReports` (admin routes, the status page, `rerank-gateway usage`): reading usage.
- `UsageLedger` (the gateway's lifecycle): the durable ledger's buffer and writer, when
  `ledger` is configured; `BudgetAlerts` likewise, for its webhooks.

Where things are kept: counters for admission (rate limits, budgets) in this process or in
Redis (`limits.limits_backend`); the record of usage in the ledger (PostgreSQL) when it is
configured, otherwise in the same place as the counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config import Config
from gateway.observe.metrics import Metrics
from gateway.state import redis_client
from gateway.state.accounts import Accounts, Policy
from gateway.state.alerts import BudgetAlerts
from gateway.state.budget_rebuild import BudgetRebuilder
from gateway.state.catalog import Catalog
from gateway.state.overfetch import Overfetch
from gateway.state.usage import UsageRecorder
from gateway.state.usage_batch import GroupCommit
from gateway.state.usage_ledger import UsageLedger
from gateway.state.usage_reports import UsageReports
from policies.money.limits import LimitPolicy
from policies.money.pricing import PriceTable
from policies.money.quota import MemoryQuotaStore, QuotaStore, TeamQuota
from policies.money.redis_quota import RedisQuotaStore
from policies.money.redis_usage import RedisUsageStore
from policies.money.usage import MemoryUsageStore, UsageStore
from policies.money.usage_buffer import BufferedUsageStore

Clock = Callable[[], float]
ANONYMOUS = "anonymous"  # the team of every request when auth.mode is none


@dataclass(frozen=True)
class Governance:
    overfetch: Overfetch
    accounts: Accounts
    usage: UsageRecorder
    reports: UsageReports
    alerts: BudgetAlerts
    ledger: UsageLedger | None


def build_governance(
    config: Config,
    catalog: Catalog,
    metrics: Metrics,
    redis: redis_client.Client | None,
    *,
    extra_quotas: Mapping[str, TeamQuota],
    stops_downgrade: Callable[[str, str], bool],
    clock: Clock = time.time,
) -> Governance:
    """`extra_quotas`: gateway-owned accounts (shadow scoring), listed in reports too;
    `stops_downgrade(alias, team)`: the shadow guard's verdict on budget downgrades."""
    rules = config.pricing.rules()
    prices = PriceTable(config.pricing, catalog.deployments)
    quota_store, usage_store = _stores(config, redis)
    ledger = UsageLedger(config.ledger, metrics, clock) if config.ledger is not None else None
    usage = UsageRecorder(
        prices,
        rules,
        metrics,
        clock,
        ledger=ledger,
        store=usage_store if ledger is None else None,
    )
    quotas = {
        name: quota
        for name, team in config.teams.items()
        if (quota := TeamQuota.of(name, team.rate_limit, team.budget)) is not None
    }
    quotas.update(extra_quotas)
    alerts = BudgetAlerts(config, metrics, redis)
    rebuilder = None
    if ledger is not None and config.ledger is not None:
        rebuilder = BudgetRebuilder(
            quota_store, ledger, metrics, clock, config.ledger.rebuild_wait_s
        )
    on_error = config.limits.on_redis_error
    accounts = Accounts(
        quotas,
        quota_store,
        prices=prices,
        rules=rules,
        usage=usage,
        alerts=alerts,
        metrics=metrics,
        clock=clock,
        tiers=catalog.tiers,
        stops_downgrade=stops_downgrade,
        policy=Policy(
            rate_limit_closed=on_error.rate_limit == "closed",
            budget_closed=on_error.budget == "closed",
        ),
        rebuilder=rebuilder,
        rebuild_timeout_s=(
            config.ledger.rebuild_wait_s + 3 * config.ledger.timeout_s + 5.0
            if config.ledger is not None
            else 0.0
        ),
    )
    limits = LimitPolicy(
        config.limits,
        {name: m.limits for name, m in config.models.items()},
        {name: t.limits for name, t in config.teams.items()},
        rules.tokens_per_char,
        config.server.max_body_bytes,
    )
    reports = UsageReports(
        sorted({*report_teams(config), *extra_quotas}),
        clock,
        ledger=ledger.store if ledger is not None else None,
        store=usage_store if ledger is None else None,
        shared=config.limits.limits_backend == "redis",
    )
    return Governance(Overfetch(limits, usage, metrics), accounts, usage, reports, alerts, ledger)


def report_teams(config: Config) -> list[str]:
    """Whose usage a report lists: the configured teams, or everyone when auth is off."""
    return sorted(config.teams) if config.auth.mode == "keys" else [ANONYMOUS]


def _stores(
    config: Config, redis: redis_client.Client | None
) -> tuple[QuotaStore, UsageStore]:
    if config.limits.limits_backend == "memory":
        return MemoryQuotaStore(), MemoryUsageStore(config.limits.usage_retention_days)
    if redis is None:  # config validation requires state.redis_url for this backend
        raise ValueError("limits.limits_backend is redis but no Redis client was given")
    prefix = config.limits.redis_prefix
    # Records that fail during an outage or a Sentinel failover are written later.
    usage = GroupCommit(
        BufferedUsageStore(RedisUsageStore(redis, prefix, config.limits.usage_retention_days))
    )
    return RedisQuotaStore(redis, prefix), usage
