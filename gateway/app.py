"""The app factory: wires config, providers, policies and routes into one aiohttp app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.admin import usage_handler
from gateway.auth import Authenticator
from gateway.catalog import Catalog
from gateway.config import Config
from gateway.errors import ApiError, error_response
from gateway.governance import Governance
from gateway.governor import Governor
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.scoring import Router, Scorer

_READY_TIMEOUT_S = 1.0
_REDIS_CONNECTIONS = 128  # per process


@dataclass
class Gateway:
    """Everything one app instance owns; stored on the app under `GATEWAY`."""

    config: Config
    catalog: Catalog
    metrics: Metrics
    pipeline: Pipeline
    redis: aioredis.Redis | None = None
    governance: Governance | None = None
    draining: bool = False


GATEWAY = web.AppKey("gateway", Gateway)


def build_scorer(
    catalog: Catalog, metrics: Metrics, governance: Governance | None = None
) -> Scorer:
    """The scoring chain, outermost layer first (see gateway.scoring)."""
    if governance is None:
        return Router(catalog.deployments, metrics)
    router = Router(catalog.deployments, metrics, billing=governance.rules)
    return Governor(router, governance)


def build_app(config: Config) -> web.Application:
    metrics = Metrics()
    catalog = Catalog(config)
    auth = Authenticator(config)
    redis = None
    if config.state.redis_url:
        # A blocking pool: under a burst, requests queue briefly for a connection instead of
        # failing with "too many connections" (the default pool's behaviour past 100).
        pool = aioredis.BlockingConnectionPool.from_url(
            config.state.redis_url,
            max_connections=_REDIS_CONNECTIONS,
            timeout=_READY_TIMEOUT_S,
            socket_timeout=_READY_TIMEOUT_S,
            socket_connect_timeout=_READY_TIMEOUT_S,
        )
        redis = aioredis.Redis(connection_pool=pool)
    governance = Governance(config, catalog, metrics, redis)
    scorer = build_scorer(catalog, metrics, governance)
    pipeline = Pipeline(config, catalog, auth, scorer, metrics, governance)
    gateway = Gateway(config, catalog, metrics, pipeline, redis, governance=governance)

    # Bodies are size-checked by the pipeline, which answers 413 in Cohere's shape.
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[GATEWAY] = gateway
    app.router.add_post("/v2/rerank", _rerank(2))
    app.router.add_post("/v1/rerank", _rerank(1))
    # Clients that put /v1 in their base URL end up here (the SDK appends v2/rerank).
    app.router.add_post("/v1/v2/rerank", _rerank(2))
    app.router.add_post("/v1/v1/rerank", _rerank(1))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/admin/usage", usage_handler(auth, governance))
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.middlewares.append(_json_errors)
    return app


def _rerank(api_version: int):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].pipeline.handle(request, api_version)

    return handler


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    checks: dict[str, str] = {}
    if gateway.draining:
        checks["server"] = "draining"
    if gateway.redis is not None:
        try:
            await asyncio.wait_for(gateway.redis.ping(), _READY_TIMEOUT_S)
            checks["redis"] = "ok"
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = f"unreachable ({exc.__class__.__name__})"
    ready = all(v == "ok" for k, v in checks.items())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_route(request: web.Request) -> web.Response:
    data = generate_latest(request.app[GATEWAY].metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _json_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Routing errors (404, 405) in Cohere's JSON shape instead of aiohttp's text pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no route {request.path}; use POST /v2/rerank"}.get(exc.status, exc.reason)
        return error_response(ApiError(exc.status, message))


async def _start(app: web.Application) -> None:
    await app[GATEWAY].catalog.start()


async def _stop(app: web.Application) -> None:
    gateway = app[GATEWAY]
    await gateway.catalog.close()
    if gateway.redis is not None:
        await gateway.redis.aclose()
