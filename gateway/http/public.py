"""The routes every caller and the platform reach without the admin key: rerank (handed to
the current gateway's pipeline), Cohere's model discovery, the liveness and readiness
probes, Prometheus' `/metrics`, and the OpenAPI document.

Errors are raised as `ApiError`s and answered by the edge middleware (`gateway.http.edge`),
in Cohere's shape.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import ApiError
from gateway.http.auth import bearer_token, hash_key
from gateway.http.models import model_page, one_model
from gateway.http.runtime import READY_TIMEOUT_S, RUNTIME, current

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rerank(api_version: int) -> Handler:
    """`POST /v2/rerank` (2) or `/v1/rerank` (1): the pipeline of the current gateway."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await current(request).pipeline.handle(request, api_version)

    return handler


def static_json(document: dict[str, Any]) -> Handler:
    """A JSON document encoded once (the OpenAPI documents)."""
    body = orjson.dumps(document)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handler


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models`: the models this gateway serves to the calling team, in Cohere's
    shape (gateway.http.models)."""
    gateway = current(request)
    caller = gateway.auth.caller(request.headers.get("Authorization"))
    page = model_page(gateway.catalog, caller.models, request.query)
    return web.Response(body=orjson.dumps(page), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    gateway = current(request)
    caller = gateway.auth.caller(request.headers.get("Authorization"))
    model = one_model(gateway.catalog, caller.models, request.match_info["model"])
    return web.Response(body=orjson.dumps(model), content_type="application/json")


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
    servable, open_breakers = gateway.deployments.servable()
    if not servable:
        checks["models"] = "no model can be served: every deployment's breaker is open"
        blocking.append("models")
    if open_breakers:
        checks["breakers"] = "open: " + ", ".join(open_breakers)
        degraded.append("breakers")
    if gateway.redis is not None:
        try:
            await asyncio.wait_for(gateway.redis.ping(), READY_TIMEOUT_S)
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


async def metrics(request: web.Request) -> web.Response:
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
            raise ApiError(401, "metrics need `Authorization: Bearer <metrics token>`")
    return await exposition(request)


async def exposition(request: web.Request) -> web.Response:
    """Every metric, in Prometheus' text format (the metrics listener's /metrics)."""
    data = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
