"""What the upstream says in `meta` beside its scores reaches the caller: the
`api_version` flags, its token counts, its warnings (with the gateway's own); a cache hit
reports only what it can truthfully say (no upstream call: no flags, no tokens)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cohere
import httpx

from tests.conftest import TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere

DOCS = ["Paris is the capital of France", "bananas are yellow", "Lyon is in France"]
UPSTREAM_META = {
    "api_version": {"is_deprecated": True, "is_experimental": False},
    "tokens": {"input_tokens": 42, "output_tokens": 0},
    "warnings": ["model rerank-v3.5 is deprecated and will be removed"],
}


def client(url: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=TEAM_KEY, base_url=url, max_retries=0, timeout=10)


def truncating_gateway(fake_cohere: tuple[FakeCohere, str], start: Callable[..., str]) -> str:
    """Over two documents the team's request is truncated, with a warning of the gateway's."""
    fake, upstream = fake_cohere
    fake.meta = UPSTREAM_META
    limits: dict[str, Any] = {"max_documents": 2, "overfetch": "truncate"}
    return start(gateway_config({"cohere-a": upstream}, limits=limits))


def test_upstream_flags_tokens_and_warnings_are_passed_on(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = truncating_gateway(fake_cohere, start_gateway)
    meta = client(url).rerank(model="rerank-v3.5", query="capital", documents=DOCS).meta
    assert meta.api_version.version == "2"
    assert (meta.api_version.is_deprecated, meta.api_version.is_experimental) == (True, False)
    assert (meta.tokens.input_tokens, meta.tokens.output_tokens) == (42, 0)
    assert meta.billed_units.search_units == 1
    gateways, upstreams = meta.warnings
    assert "max_documents=2" in gateways and "dropped" in gateways
    assert upstreams == "model rerank-v3.5 is deprecated and will be removed"


def test_a_cache_hit_reports_no_upstream_facts(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = truncating_gateway(fake_cohere, start_gateway)
    body = {"model": "rerank-v3.5", "query": "capital", "documents": DOCS}
    auth = {"Authorization": f"Bearer {TEAM_KEY}"}
    httpx.post(url + "/v2/rerank", json=body, headers=auth)
    hit = httpx.post(url + "/v2/rerank", json=body, headers=auth)
    assert hit.headers["X-Cache"] == "hit"
    meta = hit.json()["meta"]
    assert meta["api_version"] == {"version": "2"}
    assert "tokens" not in meta
    assert meta["billed_units"] == {"search_units": 0}
    (warning,) = meta["warnings"]  # the gateway's own still holds; the upstream's was its call's
    assert "max_documents=2" in warning
    assert len(fake_cohere[0].calls) == 1


def test_a_partial_hit_reports_the_tokens_of_its_own_call(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(gateway_config({"cohere-a": upstream}))
    co = client(url)
    co.rerank(model="rerank-v3.5", query="capital", documents=DOCS[:2])
    fake.meta = {"tokens": {"input_tokens": 9}}
    raw = co.with_raw_response.rerank(model="rerank-v3.5", query="capital", documents=DOCS)
    assert raw.headers["x-cache"] == "partial"
    assert fake.calls[-1]["documents"] == [DOCS[2]]
    assert raw.data.meta.tokens.input_tokens == 9
    assert raw.data.meta.api_version.is_deprecated is None  # the upstream said nothing
