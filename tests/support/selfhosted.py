"""Helpers for the self-hosted and hosted reranker tests: configs, raw calls, direct
provider calls against the fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from providers.registry import PROVIDER_TYPES
from providers.types import UpstreamCall, UpstreamResult
from tests.conftest import TEAM_KEY, teams_config
from tests.support.clouds import client
from tests.support.servers import ServerLoop

QUERY = "capital of France"
BGE = "BAAI/bge-reranker-v2-m3"
# 100 documents; every seventh names the capital, so the order is far from the input's.
MANY_DOCS = [
    f"Document {i}: "
    + ("Paris is the capital of France." if i % 7 == 3 else f"Notes on topic {i}.")
    for i in range(100)
]


def cohere_and_tei(
    cohere_url: str, tei_url: str, pro: str = "rerank-v4.0-pro", offline: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Providers and models of `rerank-auto`: `pro` on Cohere (prior 400 ms), `bge-m3` on
    TEI (prior 20 ms); with `offline`, the BM25 ranker as bge-m3's fallback."""
    providers: dict[str, Any] = {
        "cohere": {
            "type": "cohere",
            "base_url": cohere_url,
            "api_key": "upstream-key",
            "timeout_s": 5,
        },
        "tei": {"type": "tei", "base_url": tei_url, "max_batch_size": 32, "timeout_s": 5},
    }
    fast: dict[str, Any] = {
        "latency_prior_ms": {"base_ms": 20},
        "deployments": [{"provider": "tei", "model": BGE}],
    }
    if offline:
        providers["offline"] = {"type": "local"}
        fast["fallback"] = "local"
    models = {
        pro: {"latency_prior_ms": {"base_ms": 400}, "deployments": [{"provider": "cohere"}]},
        "bge-m3": fast,
        "rerank-auto": {"tiers": {"pro": pro, "fast": "bge-m3"}},
    }
    return providers, models


def provider_config(
    providers: dict[str, dict[str, Any]], model: str, upstream_model: str, **model_settings: Any
) -> dict[str, Any]:
    """One gateway model served by `providers` (name -> settings) in priority order."""
    deployments = [
        {"provider": name, "model": upstream_model, "priority": i}
        for i, name in enumerate(providers)
    ]
    return teams_config(dict(providers), {model: {"deployments": deployments, **model_settings}})


def post_sync(
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


def serves_v2_and_v1(
    gateway: str,
    model: str,
    docs: list[str],
    order: list[int],
    *,
    scale: str | None,
    query: str = QUERY,
) -> list[float]:
    """Assert the gateway ranks `docs` for `model` in `order` on `/v2/rerank` (the SDK) and
    on `/v1/rerank` (with documents returned), on score scale `scale` (None: unknown, no
    header); return the v2 scores, best first."""
    v2 = client(gateway).rerank(model=model, query=query, documents=docs, top_n=3)
    assert [r.index for r in v2.results] == order[:3]
    body = {"model": model, "query": query, "documents": docs, "top_n": 3, "return_documents": True}
    resp = post_sync(gateway, body, "/v1/rerank")
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("x-rerank-score-scale") == scale
    results = resp.json()["results"]
    assert [r["index"] for r in results] == order[:3]
    assert [r["document"] for r in results] == [{"text": docs[r["index"]]} for r in results]
    assert [r["relevance_score"] for r in results] == [r.relevance_score for r in v2.results]
    return [r.relevance_score for r in v2.results]


def uncached(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the score cache off, so every call reaches the upstream."""
    return {**data, "cache": {"backend": "none"}}
