"""Helpers for the self-hosted and hosted reranker tests: configs, raw calls, direct
provider calls against the fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from providers.registry import PROVIDER_TYPES
from providers.types import UpstreamCall, UpstreamResult
from tests.clouds import keyed_config
from tests.conftest import TEAM_KEY
from tests.servers import ServerLoop

QUERY = "capital of France"
# 100 documents; every seventh names the capital, so the order is far from the input's.
MANY_DOCS = [
    f"Document {i}: "
    + ("Paris is the capital of France." if i % 7 == 3 else f"Notes on topic {i}.")
    for i in range(100)
]


def provider_config(
    providers: dict[str, dict[str, Any]], model: str, upstream_model: str, **model_settings: Any
) -> dict[str, Any]:
    """One gateway model served by `providers` (name -> settings) in priority order."""
    deployments = [
        {"provider": name, "model": upstream_model, "priority": i}
        for i, name in enumerate(providers)
    ]
    return keyed_config(dict(providers), {model: {"deployments": deployments, **model_settings}})


def post(
    url: str, body: dict[str, Any], path: str = "/v2/rerank", **headers: str
) -> httpx.Response:
    """A raw call to the gateway (bodies the SDK cannot send, headers to read)."""
    return httpx.post(
        url + path,
        json=body,
        headers={"Authorization": f"Bearer {TEAM_KEY}", **headers},
        timeout=15,
    )


def direct(
    servers: ServerLoop,
    type_name: str,
    settings: dict[str, Any],
    documents: Sequence[str],
    model: str = "m",
    query: str = QUERY,
) -> UpstreamResult:
    """Build the provider as the gateway does and make one call with it."""
    kind = PROVIDER_TYPES[type_name]
    provider = kind.build("p", kind.options(**settings))

    async def run() -> UpstreamResult:
        await provider.start()
        try:
            return await provider.rerank(UpstreamCall(model, query, documents, timeout_s=5))
        finally:
            await provider.close()

    return servers.run(run())
