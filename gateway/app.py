"""The app factory, wiring only: builds one `Gateway` from a config (providers, state, the
scoring chain, the pipeline) and registers the routes of each listener.

What runs lives elsewhere: the gateway's life and reloads in `gateway.http.runtime`, the
handlers in `gateway.http` (`public`, `admin`, `keys`, `status_routes`), the edge that
wraps every route in `gateway.http.edge`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.chain.order import LAYERS, SHADOW_ENTRY, ChainParts, Entries, build_layers
from gateway.chain.shadow import ShadowRunner, book_for, shadow_quotas
from gateway.config import Config
from gateway.errors import Scrubber
from gateway.http import admin, keys, public, status_routes
from gateway.http.auth import Authenticator
from gateway.http.edge import EDGE_LIMITS, RERANK_PATHS, SMALL_BODY_BYTES, EdgeLimits
from gateway.http.edge import middleware as edge_middleware
from gateway.http.openapi import admin_spec, public_spec
from gateway.http.pipeline import Pipeline
from gateway.http.runtime import READY_TIMEOUT_S, RUNTIME, Gateway, Runtime, lifetime
from gateway.observe.metrics import MULTIPROC_ENV, Metrics
from gateway.observe.tracing import Tracing
from gateway.state import redis_client
from gateway.state.admin_sessions import SignIn, local_store
from gateway.state.api_keys import KeyKeeper, KeyService
from gateway.state.catalog import Catalog
from gateway.state.deployments import DeploymentState
from gateway.state.depth import build_depth
from gateway.state.governance import build_governance, report_teams
from gateway.state.score_cache import CacheSettings, build_store
from policies.access.api_keys import KeyDirectory
from policies.access.redis_keys import RedisKeyStore
from policies.access.sessions import SessionStore
from providers.http import HttpTransport

_REDIS_CONNECTIONS = 128  # per process
_REDIS_RETRIES = 4  # 25+50+100+200 ms of back-off: long enough for a Sentinel failover


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
        timeout_s=READY_TIMEOUT_S,
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
        Entries(layers),
    )
    return Gateway(
        config,
        catalog,
        metrics,
        pipeline,
        auth,
        deployments,
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
    """The public listener's app. `clock`, `span_exporter` and `wall_clock` are handed to
    every gateway built for it, the first and those of reloads (see `build_gateway`)."""
    metrics = metrics or Metrics()
    # With several workers, their parent made a directory they share: sessions go there.
    # Without Redis, status-page sessions outlive a reload (a changed admin key ends them).
    sessions = local_store(os.environ.get(MULTIPROC_ENV))
    build = functools.partial(
        build_gateway,
        metrics=metrics,
        clock=clock,
        span_exporter=span_exporter,
        wall_clock=wall_clock,
        sessions=sessions,
    )
    # Bodies are size-checked by the pipeline, which answers 413 in Cohere's shape.
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[RUNTIME] = Runtime(metrics, build(config), build)
    app[EDGE_LIMITS] = EdgeLimits.from_config(config.server, _count_refusal(metrics))
    # /v1/v2/rerank: clients that put /v1 in their base URL (the SDK appends v2/rerank).
    for path in RERANK_PATHS:
        app.router.add_post(path, public.rerank(2 if path.endswith("/v2/rerank") else 1))
    app.router.add_get("/v1/models", public.list_models)  # Cohere's model discovery
    app.router.add_get("/v1/models/{model}", public.get_model)
    app.router.add_get("/healthz", public.healthz)
    app.router.add_get("/readyz", public.readyz)
    app.router.add_get("/metrics", public.metrics)
    if config.server.metrics_port is None:  # otherwise only the metrics listener has them
        add_status_routes(app)
    app.router.add_get("/openapi.json", public.static_json(public_spec()))
    guarded = admin.admin_route
    app.router.add_get("/admin/openapi.json", guarded(public.static_json(admin_spec())))
    app.router.add_get("/admin/usage", admin.usage)  # the admin, or a manager for its team
    app.router.add_get("/admin/depth", admin.depth)  # likewise
    app.router.add_post("/admin/keys", keys.keys_route(admin.key_actor, keys.create_key))
    app.router.add_get("/admin/keys", keys.keys_route(admin.key_actor, keys.list_keys))
    app.router.add_delete("/admin/keys/{id}", keys.keys_route(admin.key_actor, keys.revoke_key))
    app.router.add_post(
        "/admin/keys/{id}/rotate", keys.keys_route(admin.key_actor, keys.rotate_key)
    )
    app.router.add_get("/admin/deployments", guarded(admin.deployments))
    app.router.add_get("/admin/tiers", guarded(admin.tiers))
    app.cleanup_ctx.append(lifetime)  # the gateway starts before serving, closes after
    app.middlewares.append(edge_middleware)  # request ids; every error in Cohere's shape
    return app


def build_metrics_app(app: web.Application) -> web.Application:
    """The private listener (`server.metrics_port`): /metrics for Prometheus, and the status
    page (still behind the admin key). It serves the same runtime as `app`, behind the
    same edge limits; its only bodies are the sign-in form's (small, uncompressed)."""
    private = web.Application(client_max_size=SMALL_BODY_BYTES)
    private[RUNTIME] = app[RUNTIME]
    private[EDGE_LIMITS] = app[EDGE_LIMITS]
    private.router.add_get("/metrics", public.exposition)
    private.router.add_get("/healthz", public.healthz)
    add_status_routes(private)
    private.middlewares.append(edge_middleware)
    return private


def add_status_routes(app: web.Application) -> None:
    app.router.add_get("/admin/status", status_routes.page)
    app.router.add_get("/admin/status.json", admin.admin_route(status_routes.data))
    app.router.add_post("/admin/login", status_routes.sign_in)
    app.router.add_post("/admin/logout", status_routes.sign_out)


def _count_refusal(metrics: Metrics) -> Callable[[str], None]:
    def count(reason: str) -> None:
        metrics.edge_refusals.labels(reason).inc()

    return count
