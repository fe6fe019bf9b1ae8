"""The app factory: wires config, providers, policies and routes into one aiohttp app."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.chain.order import LAYERS, SHADOW_ENTRY, ChainParts, build_layers
from gateway.chain.shadow import ShadowRunner, book_for, shadow_quotas
from gateway.config import Config
from gateway.errors import ApiError, Scrubber, error_response, retry_after
from gateway.http import status
from gateway.http.admin import depth_report, report_csv, report_format, usage_report
from gateway.http.auth import Authenticator, bearer_token, hash_key
from gateway.http.edge import (
    EDGE_LIMITS,
    RERANK_PATHS,
    SMALL_BODY_BYTES,
    EdgeLimits,
    request_id,
)
from gateway.http.edge import middleware as edge_middleware
from gateway.http.keys import (
    create_key,
    keys_route,
    list_keys,
    own_team_query,
    revoke_key,
    rotate_key,
)
from gateway.http.models import model_page, one_model
from gateway.http.openapi import admin_spec, public_spec
from gateway.http.pipeline import Pipeline
from gateway.observe.metrics import MULTIPROC_ENV, Metrics
from gateway.observe.tracing import Tracing
from gateway.state import redis_client
from gateway.state.accounts import Accounts
from gateway.state.admin_sessions import SignIn, local_store
from gateway.state.alerts import BudgetAlerts
from gateway.state.api_keys import Actor, KeyKeeper, KeyService
from gateway.state.catalog import Catalog
from gateway.state.deployments import DeploymentState
from gateway.state.depth import DepthBook, build_depth
from gateway.state.governance import build_governance, report_teams
from gateway.state.redis_policy import StartupRefused, check_eviction
from gateway.state.score_cache import CacheSettings, build_store
from gateway.state.usage_ledger import UsageLedger
from gateway.state.usage_reports import UsageReports
from policies.api_keys import KeyDirectory
from policies.cache import ScoreStore
from policies.ledger_pg import SchemaMismatch
from policies.redis_keys import RedisKeyStore
from policies.sessions import SessionStore
from providers.http import HttpTransport

_READY_TIMEOUT_S = 1.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REDIS_CONNECTIONS = 128  # per process
_REDIS_RETRIES = 4  # 25+50+100+200 ms of back-off: long enough for a Sentinel failover


@dataclass
class Gateway:
    """Everything built from one config. A reload builds a new one and retires the old."""

    config: Config
    catalog: Catalog
    metrics: Metrics
    pipeline: Pipeline
    accounts: Accounts
    reports: UsageReports
    alerts: BudgetAlerts
    sign_in: SignIn  # the status page's sessions
    depth: DepthBook
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


@dataclass
class Runtime:
    """What lives as long as the process: metrics, the current gateway, the drain flag."""

    metrics: Metrics
    gateway: Gateway
    draining: bool = False
    started: bool = False  # set once the gateway's providers are started
    clock: Callable[[], float] | None = None  # for routing policies; None: time.monotonic
    wall_clock: Callable[[], float] = time.time  # for API key expiry
    span_exporter: Any = None  # tests: where spans go instead of OTLP
    started_at: float = field(default_factory=time.time)  # for the status page's uptime
    # Status-page sessions without Redis: outlive a reload (a changed admin key ends them).
    sessions: SessionStore = field(default_factory=lambda: local_store(None))


RUNTIME = web.AppKey("runtime", Runtime)


def current(request: web.Request) -> Gateway:
    """The gateway serving this request (the newest config)."""
    return request.app[RUNTIME].gateway


def build_gateway(
    config: Config,
    metrics: Metrics,
    clock: Callable[[], float] | None = None,
    span_exporter: Any = None,
    wall_clock: Callable[[], float] = time.time,
    sessions: SessionStore | None = None,
) -> Gateway:
    """`clock` drives breakers, the retry budget and latency decay; `wall_clock` API key
    and session expiry (tests inject fakes); `span_exporter` receives the spans instead of
    OTLP (tests); `sessions` keeps status-page sessions when there is no Redis."""
    catalog = Catalog(config)
    for name, provider in catalog.providers.items():
        transport = getattr(provider, "transport", None)
        if isinstance(transport, HttpTransport):  # shows when max_connections binds
            transport.on_pool_wait = metrics.upstream_pool_waits.labels(name).inc
    # Limits, budgets and usage: connection errors are retried briefly, so a Sentinel
    # failover reconnects to the new master instead of failing (gateway.state.redis_client).
    redis = redis_client.connect(
        config.state,
        timeout_s=_READY_TIMEOUT_S,
        max_connections=_REDIS_CONNECTIONS,
        retries=_REDIS_RETRIES,
    )
    keeper = keys = None
    if redis is not None:  # API keys live in the state Redis, next to budgets and usage
        store = RedisKeyStore(redis, config.auth.api_keys_prefix)
        keeper = KeyKeeper(store, config.auth.api_keys_refresh_s)
        keys = KeyService(config, store, keeper, wall_clock)
    directory: KeyDirectory | None = keeper.directory if keeper is not None else None
    auth = Authenticator(config, directory, wall_clock)
    sign_in = SignIn.build(
        config, redis, sessions or local_store(None), auth.check_admin, metrics, wall_clock
    )
    # Shadow scoring's quality guard, which both kinds of downgrade consult.
    book = book_for(config)
    governance = build_governance(
        config,
        catalog,
        metrics,
        redis,
        extra_quotas=shadow_quotas(config),
        stops_downgrade=book.stops_downgrade,
    )
    accounts = governance.accounts
    cache_store = build_store(config, metrics)
    deployments = DeploymentState(config, catalog, metrics, clock, book.stops_downgrade)
    layers = build_layers(
        ChainParts(
            metrics=metrics,
            deployments=deployments,
            accounts=accounts,
            usage=governance.usage,
            rules=accounts.rules,
            cache_store=cache_store,
            cache_settings=CacheSettings.from_config(config, catalog),
            scrub=Scrubber(key_digests(config)),
        )
    )
    shadow = ShadowRunner(config, layers[SHADOW_ENTRY], accounts.prices, metrics, book)
    depth = build_depth(
        config,
        catalog,
        deployments,
        accounts.prices,
        metrics,
        redis,
        labelled_teams=report_teams(config),
    )
    scorer = layers[LAYERS[0].name]
    tracing = Tracing.build(config.telemetry, exporter=span_exporter)
    pipeline = Pipeline(
        config,
        catalog,
        auth,
        scorer,
        metrics,
        deployments,
        governance.overfetch,
        accounts.prices,
        depth,
        shadow,
        tracing,
    )
    return Gateway(
        config,
        catalog,
        metrics,
        pipeline,
        accounts,
        governance.reports,
        governance.alerts,
        sign_in,
        depth,
        governance.ledger,
        redis,
        cache_store,
        shadow,
        tracing,
        keeper=keeper,
        keys=keys,
    )


def key_digests(config: Config) -> set[str]:
    """The digests of every key the config names: what an upstream's text must not quote."""
    digests = {d for team in config.teams.values() for d in team.key_sha256}
    digests.update(d for team in config.teams.values() for d in team.manager_key_sha256)
    for digest in (config.auth.admin_key_sha256, config.server.metrics_token_sha256):
        if digest is not None:
            digests.add(digest)
    return digests


def build_app(
    config: Config,
    metrics: Metrics | None = None,
    *,
    clock: Callable[[], float] | None = None,
    span_exporter: Any = None,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    metrics = metrics or Metrics()
    # With several workers, their parent made a directory they share: sessions go there.
    sessions = local_store(os.environ.get(MULTIPROC_ENV))
    gateway = build_gateway(config, metrics, clock, span_exporter, wall_clock, sessions)
    runtime = Runtime(
        metrics,
        gateway,
        clock=clock,
        span_exporter=span_exporter,
        wall_clock=wall_clock,
        sessions=sessions,
    )

    # Bodies are size-checked by the pipeline, which answers 413 in Cohere's shape.
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[RUNTIME] = runtime
    app[EDGE_LIMITS] = EdgeLimits.from_config(config.server, _count_refusal(metrics))
    # /v1/v2/rerank: clients that put /v1 in their base URL (the SDK appends v2/rerank).
    for path in RERANK_PATHS:
        app.router.add_post(path, _rerank(2 if path.endswith("/v2/rerank") else 1))
    app.router.add_get("/v1/models", list_models)  # Cohere's model discovery
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    if config.server.metrics_port is None:  # otherwise only the metrics listener has them
        add_status_routes(app)
    app.router.add_get("/openapi.json", _static_json(public_spec()))
    app.router.add_get("/admin/openapi.json", admin_route(_static_json(admin_spec())))
    app.router.add_get("/admin/usage", admin_usage)  # the admin, or a manager for its team
    app.router.add_get("/admin/depth", admin_depth)  # likewise
    app.router.add_post("/admin/keys", keys_route(_key_actor, create_key))
    app.router.add_get("/admin/keys", keys_route(_key_actor, list_keys))
    app.router.add_delete("/admin/keys/{id}", keys_route(_key_actor, revoke_key))
    app.router.add_post("/admin/keys/{id}/rotate", keys_route(_key_actor, rotate_key))
    app.router.add_get("/admin/deployments", admin_route(deployments_route))
    app.router.add_get("/admin/tiers", admin_route(tiers_route))
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.middlewares.append(edge_middleware)  # request ids; routing errors as JSON
    return app


def build_metrics_app(app: web.Application) -> web.Application:
    """The private listener (`server.metrics_port`): /metrics for Prometheus, and the status
    page (still behind the admin key). It serves the same runtime as `app`, behind the
    same edge limits; its only bodies are the sign-in form's (small, uncompressed)."""
    private = web.Application(client_max_size=SMALL_BODY_BYTES)
    private[RUNTIME] = app[RUNTIME]
    private[EDGE_LIMITS] = app[EDGE_LIMITS]
    private.router.add_get("/metrics", _exposition)
    private.router.add_get("/healthz", healthz)
    add_status_routes(private)
    private.middlewares.append(edge_middleware)
    return private


def _count_refusal(metrics: Metrics) -> Callable[[str], None]:
    def count(reason: str) -> None:
        metrics.edge_refusals.labels(reason).inc()

    return count


def add_status_routes(app: web.Application) -> None:
    app.router.add_get("/admin/status", status_page)
    app.router.add_get("/admin/status.json", admin_route(status_json))
    app.router.add_post("/admin/login", status_login)
    app.router.add_post("/admin/logout", status_logout)


async def reload(app: web.Application, config: Config) -> None:
    """Serve `config` from now on; the old gateway finishes its requests, then closes.

    The listen address, worker count and body limit are fixed at start; changing them
    needs a restart.
    """
    runtime = app[RUNTIME]
    fresh = build_gateway(
        config,
        runtime.metrics,
        runtime.clock,
        runtime.span_exporter,
        runtime.wall_clock,
        runtime.sessions,
    )
    try:
        await fresh.start()
    except BaseException:  # e.g. StartupRefused: the old gateway keeps serving
        await fresh.close()
        raise
    old, runtime.gateway = runtime.gateway, fresh
    await retire(old, config.server.drain_timeout_s)


async def retire(gateway: Gateway, timeout_s: float) -> None:
    """Close `gateway` once its in-flight requests are done (or `timeout_s` passed)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while gateway.pipeline.in_flight and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await gateway.close()


def _rerank(api_version: int):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return await current(request).pipeline.handle(request, api_version)

    return handler


def _static_json(document: dict[str, Any]) -> Handler:
    body = orjson.dumps(document)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handler


def admin_route(handler: Handler) -> Handler:
    """Guard an /admin/ handler with the admin key (refusals answered by the edge middleware)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        current(request).pipeline.auth.check_admin(request.headers.get("Authorization"))
        return await handler(request)

    return guarded


def _key_actor(request: web.Request) -> tuple[Actor, KeyService | None]:
    """The admin or a team manager, and this gateway's key service."""
    gateway = current(request)
    return gateway.pipeline.auth.principal(request.headers.get("Authorization")), gateway.keys


async def admin_usage(request: web.Request) -> web.Response:
    """`GET /admin/usage?team=&from=&to=|month=&by=&format=json|csv`: usage and cost (a
    manager key: its own team's only)."""
    gateway = current(request)
    actor = gateway.pipeline.auth.principal(request.headers.get("Authorization"))
    query = own_team_query(actor, request.query)
    kind = report_format(query)
    api_teams = gateway.keeper.directory.teams() if gateway.keeper is not None else set()
    report = await usage_report(gateway.reports, query, api_teams)
    if kind == "csv":
        return web.Response(text=report_csv(report), content_type="text/csv")
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models`: the models this gateway serves to the calling team, in Cohere's
    shape (gateway.http.models)."""
    pipeline = current(request).pipeline
    caller = pipeline.auth.caller(request.headers.get("Authorization"))
    page = model_page(pipeline.catalog, caller.models, request.query)
    return web.Response(body=orjson.dumps(page), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    pipeline = current(request).pipeline
    caller = pipeline.auth.caller(request.headers.get("Authorization"))
    model = one_model(pipeline.catalog, caller.models, request.match_info["model"])
    return web.Response(body=orjson.dumps(model), content_type="application/json")


async def admin_depth(request: web.Request) -> web.Response:
    """`GET /admin/depth?team=`: the depth advice per team and model (a manager key: its
    own team's), after adding this process's latest counts to the store."""
    gateway = current(request)
    actor = gateway.pipeline.auth.principal(request.headers.get("Authorization"))
    query = own_team_query(actor, request.query, "depth advice", "/admin/depth")
    report = await depth_report(gateway.depth, gateway.depth_teams(), query)
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready means "can serve": 503 only while starting or draining, or when no model has a
    deployment left to call. A degraded dependency (Redis unreachable, breakers open) is
    named in the body and in `rerank_dependency_up`, but keeps the pod in the Service:
    requests are still answered (cache misses; limits as `limits.on_redis_error` says).
    `server.ready_requires_redis: true` makes an unreachable Redis not-ready (for
    fail-closed deployments that prefer other replicas)."""
    runtime = request.app[RUNTIME]
    gateway = runtime.gateway
    checks: dict[str, str] = {}
    blocking: list[str] = []
    degraded: list[str] = []
    if runtime.draining or not runtime.started:
        checks["server"] = "draining" if runtime.draining else "starting"
        blocking.append("server")
    servable, open_breakers = gateway.pipeline.routing.servable()
    if not servable:
        checks["models"] = "no model can be served: every deployment's breaker is open"
        blocking.append("models")
    if open_breakers:
        checks["breakers"] = "open: " + ", ".join(open_breakers)
        degraded.append("breakers")
    if gateway.redis is not None:
        try:
            await asyncio.wait_for(gateway.redis.ping(), _READY_TIMEOUT_S)
            checks["redis"] = "ok"
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = f"unreachable ({exc.__class__.__name__})"
            required = gateway.config.server.ready_requires_redis
            (blocking if required else degraded).append("redis")
        runtime.metrics.dependency_up.labels("redis").set(0 if checks["redis"] != "ok" else 1)
    status = "not ready" if blocking else "degraded" if degraded else "ready"
    body: dict[str, object] = {"status": status, "checks": checks}
    if degraded:
        body["degraded"] = degraded
    return web.json_response(body, status=503 if blocking else 200)


async def deployments_route(request: web.Request) -> web.Response:
    """Breaker state, recent error rate and latency per deployment (admin)."""
    return web.json_response(current(request).pipeline.routing.snapshot())


async def tiers_route(request: web.Request) -> web.Response:
    """Shadow quality evaluation of the tiered aliases (admin; see docs/tiers.md)."""
    shadow = current(request).shadow
    report = shadow.report() if shadow is not None else {"scope": "this process", "aliases": {}}
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def metrics_route(request: web.Request) -> web.Response:
    """/metrics on the public port: absent when a metrics port is configured, behind a
    bearer token when one is set (its labels name every team and its spend)."""
    server = current(request).config.server
    if server.metrics_port is not None:
        raise web.HTTPNotFound()
    if server.metrics_token_sha256 is not None:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or not secrets.compare_digest(
            hash_key(token), server.metrics_token_sha256
        ):
            return error_response(
                ApiError(401, "metrics need `Authorization: Bearer <metrics token>`"),
                request_id(request),
            )
    return await _exposition(request)


async def _exposition(request: web.Request) -> web.Response:
    data = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def _is_admin(request: web.Request) -> bool:
    """The admin key in the header (scripts), or a live session of the sign-in form."""
    gateway = current(request)
    header = request.headers.get("Authorization")
    if header is None:
        return await gateway.sign_in.signed_in(request.cookies.get(status.COOKIE))
    try:
        gateway.pipeline.auth.check_admin(header)
    except ApiError:
        return False
    return True


def _html(text: str, status_code: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status_code, content_type="text/html", headers=_PAGE_HEADERS
    )


async def _status_data(request: web.Request) -> dict[str, Any]:
    runtime = request.app[RUNTIME]
    gateway = runtime.gateway
    return await status.collect(
        gateway.config,
        gateway.pipeline.routing,
        gateway.reports,
        runtime.metrics,
        gateway.redis,
        runtime.started_at,
        runtime.draining,
        gateway.shadow.report() if gateway.shadow is not None else None,
        depth=(gateway.depth, gateway.depth_teams()),
    )


async def status_page(request: web.Request) -> web.Response:
    """`GET /admin/status`: the page when signed in, else the sign-in form."""
    if current(request).config.auth.admin_key_sha256 is None:
        return error_response(
            ApiError(403, "admin routes are disabled: set auth.admin_key_sha256"),
            request_id(request),
        )
    if not await _is_admin(request):
        return _html(status.login_page())
    return _html(status.render(await _status_data(request)))


async def status_json(request: web.Request) -> web.Response:
    data = await _status_data(request)
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def status_login(request: web.Request) -> web.StreamResponse:
    """The sign-in form's POST: a good key opens a session, whose random token becomes an
    HTTP-only, same-site cookie (Secure unless this is plain HTTP on loopback)."""
    form = await request.post()
    key = form.get("key")
    address = request.remote or "unknown"
    try:
        token = await current(request).sign_in.sign_in(
            key if isinstance(key, str) else None, address
        )
    except ApiError as exc:
        page = _html(status.login_page(exc.message), exc.status)
        if exc.retry_after_s is not None:
            page.headers["Retry-After"] = retry_after(exc.retry_after_s)
        return page
    response = _see_status()
    response.set_cookie(
        status.COOKIE,
        token,
        path="/admin/",
        httponly=True,
        samesite="Strict",
        secure=status.cookie_secure(request),
    )
    return response


async def status_logout(request: web.Request) -> web.StreamResponse:
    """Ends the session everywhere (the store forgets it), then the browser's copy."""
    address = request.remote or "unknown"
    try:
        await current(request).sign_in.sign_out(request.cookies.get(status.COOKIE), address)
    except ApiError as exc:
        return _html(status.login_page(exc.message), exc.status)
    response = _see_status()
    response.del_cookie(status.COOKIE, path="/admin/")
    return response


def _see_status() -> web.Response:
    return web.Response(status=303, headers={**_PAGE_HEADERS, "Location": "/admin/status"})


async def _start(app: web.Application) -> None:
    await app[RUNTIME].gateway.start()
    app[RUNTIME].started = True


async def _stop(app: web.Application) -> None:
    await app[RUNTIME].gateway.close()
