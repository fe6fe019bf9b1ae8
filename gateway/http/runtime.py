"""What a serving process holds: the gateway built from the current config, and its life.

A `Gateway` is everything one config builds (providers, state, the pipeline); it starts
before the first request and closes after the last. The `Runtime` lives as long as the
process: the metrics, the gateway serving now, the drain flag, and how to build another
gateway from a new config. A reload builds and starts the new gateway first (a failure
leaves the old one serving), switches to it, then retires the old one once its requests
are done. Handlers reach the current gateway through `current(request)`; nothing else is
global. The app factory (`gateway.app`) builds the first gateway and wires the routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.chain.shadow import ShadowRunner
from gateway.config import Config
from gateway.http.auth import Authenticator
from gateway.http.pipeline import Pipeline
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import Tracing
from gateway.state import redis_client
from gateway.state.accounts import Accounts
from gateway.state.admin_sessions import SignIn
from gateway.state.alerts import BudgetAlerts
from gateway.state.api_keys import KeyKeeper, KeyService
from gateway.state.catalog import Catalog
from gateway.state.deployments import DeploymentState
from gateway.state.depth import DepthBook
from gateway.state.governance import report_teams
from gateway.state.redis_policy import StartupRefused, check_eviction
from gateway.state.usage_ledger import UsageLedger
from gateway.state.usage_reports import UsageReports
from policies.cache import ScoreStore
from policies.money.ledger_pg import SchemaMismatch

READY_TIMEOUT_S = 1.0  # a state Redis that takes longer is not ready (and not waited for)


@dataclass
class Gateway:
    """Everything built from one config. A reload builds a new one and retires the old."""

    config: Config
    catalog: Catalog
    metrics: Metrics
    pipeline: Pipeline
    auth: Authenticator  # team keys, manager keys, the admin key
    deployments: DeploymentState  # health and latency of each deployment
    accounts: Accounts
    reports: UsageReports
    alerts: BudgetAlerts
    sign_in: SignIn  # the status page's sessions
    depth: DepthBook  # depth advice: measured per request, counts flushed, advice read
    ledger: UsageLedger | None = None
    redis: redis_client.Client | None = None
    cache_store: ScoreStore | None = None
    shadow: ShadowRunner | None = None
    tracing: Tracing | None = None
    watchers: list[asyncio.Task[None]] = field(default_factory=list)  # Sentinel master moves
    keeper: KeyKeeper | None = None  # this replica's snapshot of the API keys
    keys: KeyService | None = None  # None without state.redis_url: no API keys

    async def start(self) -> None:
        if self.redis is not None:
            state = self.config.state
            assert state.redis_url is not None
            await check_eviction(self.redis, state.redis_url, state.on_evicting_redis)
        if self.ledger is not None:
            try:
                await self.ledger.start()
            except SchemaMismatch as exc:
                raise StartupRefused(str(exc)) from None
        await self.catalog.start()
        # A cluster client learns the slot map on first use; learn it now, not on a request
        # (whose 80 ms cache budget it would exceed). Failing here is fine: it retries later.
        shared = getattr(self.cache_store, "redis", self.cache_store)  # tiered: its Redis level
        for client in (self.redis, getattr(shared, "client", None)):
            await redis_client.warm_up(client)
            if redis_client.target(self.config.state) is not None:
                task = asyncio.create_task(redis_client.follow_master(client))
                self.watchers.append(task)
        if self.ledger is not None and self.redis is not None:
            # A new Redis (failover, restart from an old snapshot) may have lost budget
            # writes: the counters are then seeded again from the ledger.
            watch = redis_client.watch_incarnation(
                self.redis, self.config.limits.redis_prefix, self.accounts.forget_budgets
            )
            self.watchers.append(asyncio.create_task(watch))
        if self.keeper is not None:
            await self.keeper.start()
        await self.sign_in.sweep()  # sessions of another admin key end here
        await self.depth.start(self.depth_teams)

    def depth_teams(self) -> list[str]:
        """Whose depth advice there is: the configured teams (or `anonymous` with auth
        off), those that only have API keys, and any this process has measured."""
        api_teams = self.keeper.directory.teams() if self.keeper is not None else set()
        return sorted({*report_teams(self.config), *api_teams, *self.depth.teams_seen()})

    async def close(self) -> None:
        for task in self.watchers:
            task.cancel()
        await self.depth.close()  # the last counts, while Redis is still open
        if self.keeper is not None:
            await self.keeper.close()
        await self.alerts.close()
        if self.shadow is not None:
            await self.shadow.close()
        await self.catalog.close()
        if self.cache_store is not None:
            await self.cache_store.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.ledger is not None:  # every answered request's event, written or spilled
            await self.ledger.close(self.config.server.drain_timeout_s)
        if self.tracing is not None:  # flushes queued spans; blocking, so off the loop
            await asyncio.to_thread(self.tracing.close)

    async def started(self) -> None:
        """Start, or close what did start and raise (a refused start leaks nothing)."""
        try:
            await self.start()
        except BaseException:  # e.g. StartupRefused
            await self.close()
            raise


@dataclass
class Runtime:
    """What lives as long as the process: metrics, the current gateway, the drain flag."""

    metrics: Metrics
    gateway: Gateway
    build: Callable[[Config], Gateway]  # another gateway, from a reloaded config
    draining: bool = False
    started: bool = False  # set once the gateway's providers are started
    started_at: float = field(default_factory=time.time)  # for the status page's uptime

    async def reload(self, config: Config) -> None:
        """Serve `config` from now on; the old gateway finishes its requests, then closes.

        The listen address, worker count and body limit are fixed at start; changing them
        needs a restart.
        """
        fresh = self.build(config)
        await fresh.started()  # raises with the old gateway still serving
        old, self.gateway = self.gateway, fresh
        await retire(old, config.server.drain_timeout_s)


RUNTIME = web.AppKey("runtime", Runtime)


def current(request: web.Request) -> Gateway:
    """The gateway serving this request (the newest config)."""
    return request.app[RUNTIME].gateway


async def lifetime(app: web.Application) -> AsyncIterator[None]:
    """The app's `cleanup_ctx`: the gateway starts before the first request, and the one
    serving at the end (a reload may have replaced the first) closes after the last."""
    runtime = app[RUNTIME]
    await runtime.gateway.started()
    runtime.started = True
    yield
    await runtime.gateway.close()


async def reload(app: web.Application, config: Config) -> None:
    """Serve `config` from now on (SIGHUP, tests); see `Runtime.reload`."""
    await app[RUNTIME].reload(config)


async def retire(gateway: Gateway, timeout_s: float) -> None:
    """Close `gateway` once its in-flight requests are done (or `timeout_s` passed)."""
    await gateway.pipeline.idle(timeout_s)
    await gateway.close()
