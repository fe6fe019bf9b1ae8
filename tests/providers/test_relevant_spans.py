"""Rerank 5's relevant spans through the gateway, with the real `cohere` 7.3 SDK (whose
`ClientV2.rerank` sends `relevant_spans` and reads `results[].relevant_spans`) against
fake Cohere upstreams that implement spans as the SDK's types describe them.

Model `rerank-v5.0-pro` has two deployments: `plain` first (no span support, as any
deployment off Cohere's own API by default) and `spans` second (`relevant_spans: true`).
"""

from __future__ import annotations

from typing import Any

import cohere
import pytest
from cohere import RerankRelevantSpans

from gateway.app import build_app
from gateway.config import ConfigError, parse_config
from gateway.state.catalog import Catalog
from tests.conftest import TEAM_KEY, teams_config
from tests.fakes.cohere import FakeCohere, Faults, pair_tokens, relevant_spans
from tests.support.servers import ServerLoop

V5 = "rerank-v5.0-pro"
QUERY = "capital of France"
DOCS = [
    "Café ☕ au lait: Paris is the capital of France.",  # code points differ from bytes
    "Bananas are yellow.",
    "Lyon is a large city in France, not the capital.",
]


def provider(url: str) -> dict[str, Any]:
    return {"type": "cohere", "base_url": url, "api_key": "upstream-key", "timeout_s": 5}


@pytest.fixture
def upstreams(servers: ServerLoop) -> dict[str, FakeCohere]:
    return {"plain": FakeCohere(), "spans": FakeCohere()}


@pytest.fixture
def url(servers: ServerLoop, upstreams: dict[str, FakeCohere]) -> str:
    urls = {name: servers.serve(fake.app()) for name, fake in upstreams.items()}
    config = teams_config(
        {name: provider(u) for name, u in urls.items()},
        {
            V5: {
                "deployments": [
                    {"provider": "plain", "priority": 0},
                    {"provider": "spans", "priority": 1, "relevant_spans": True},
                ],
                "fallback": "passthrough",
            },
            "rerank-v3.5": {"deployments": [{"provider": "plain"}]},
        },
    )
    return servers.serve(build_app(parse_config(config, {})))


def client(url: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=TEAM_KEY, base_url=url, max_retries=0, timeout=10)


def ask(url: str, **spans: Any) -> Any:
    return client(url).with_raw_response.rerank(
        model=V5,
        query=QUERY,
        documents=DOCS,
        relevant_spans=RerankRelevantSpans(mode="enabled", **spans),
    )


def test_the_sdk_gets_each_documents_spans_from_a_deployment_that_returns_them(
    url: str, upstreams: dict[str, FakeCohere]
) -> None:
    raw = ask(url, threshold=0.3, max_spans=2)
    assert raw.headers["x-rerank-deployment"] == "spans/rerank-v5.0-pro"
    # Passed on as the caller sent them; the deployment without support was skipped.
    assert upstreams["spans"].calls[-1]["relevant_spans"] == {
        "mode": "enabled",
        "threshold": 0.3,
        "max_spans": 2,
    }
    assert upstreams["plain"].calls == []
    by_index = {r.index: r for r in raw.data.results}
    for index, doc in enumerate(DOCS):
        expected = relevant_spans(QUERY, doc, 0.3, 2)
        got = by_index[index].relevant_spans
        if not expected:
            assert got is None  # omitted when there are none, as Cohere does
            continue
        assert [(s.start, s.end, s.score) for s in got] == [
            (e["start"], e["end"], e["score"]) for e in expected
        ]
        # Unicode code points, [start, end): the spans cut the caller's own string.
        assert {doc[s.start : s.end].lower() for s in got} <= {"capital", "france", "of"}
    assert by_index[1].relevant_spans is None  # nothing relevant in the bananas
    # Billing is the upstream's, as without spans (Rerank 5 bills tokens).
    assert raw.data.meta.billed_units.input_tokens == pair_tokens(QUERY, DOCS)


def test_the_upstreams_default_threshold_applies_when_the_caller_sets_none(
    url: str, upstreams: dict[str, FakeCohere]
) -> None:
    raw = ask(url)
    assert upstreams["spans"].calls[-1]["relevant_spans"] == {"mode": "enabled"}
    first = next(r for r in raw.data.results if r.index == 0)
    assert len(first.relevant_spans) == len(relevant_spans(QUERY, DOCS[0], 0.1, None)) == 3


def test_requests_without_spans_keep_the_usual_attempt_order(
    url: str, upstreams: dict[str, FakeCohere]
) -> None:
    raw = client(url).with_raw_response.rerank(model=V5, query=QUERY, documents=DOCS)
    assert raw.headers["x-rerank-deployment"] == "plain/rerank-v5.0-pro"
    # Disabled spans are no request for spans: the same scores, from the cache.
    raw = client(url).with_raw_response.rerank(
        model=V5,
        query=QUERY,
        documents=DOCS,
        relevant_spans=RerankRelevantSpans(mode="disabled", threshold=0.5),
    )
    assert raw.headers["x-cache"] == "hit"
    assert all(r.relevant_spans is None for r in raw.data.results)
    assert len(upstreams["plain"].calls) == 1
    assert "relevant_spans" not in upstreams["plain"].calls[0]
    assert upstreams["spans"].calls == []


def test_span_requests_bypass_the_score_cache(url: str, upstreams: dict[str, FakeCohere]) -> None:
    first, second = ask(url), ask(url)
    assert first.headers["x-cache"] == second.headers["x-cache"] == "bypass"
    assert len(upstreams["spans"].calls) == 2  # the stores hold scores, not spans
    assert second.data.results[0].relevant_spans is not None
    # Nor did they fill it: a plain request after them is a miss, then a hit.
    for expected in ("miss", "hit"):
        raw = client(url).with_raw_response.rerank(model=V5, query=QUERY, documents=DOCS)
        assert raw.headers["x-cache"] == expected


def test_a_model_no_deployment_of_which_returns_spans_is_a_400_naming_it(
    url: str, upstreams: dict[str, FakeCohere]
) -> None:
    with pytest.raises(cohere.BadRequestError) as info:
        client(url).rerank(
            model="rerank-v3.5",
            query=QUERY,
            documents=DOCS,
            relevant_spans=RerankRelevantSpans(mode="enabled"),
        )
    message = info.value.body["message"]
    assert "model 'rerank-v3.5' cannot return relevant_spans" in message
    assert "set its mode to disabled" in message
    assert upstreams["plain"].calls == []


def test_when_the_span_deployment_is_down_the_fallback_answers_without_spans(
    url: str, upstreams: dict[str, FakeCohere]
) -> None:
    upstreams["spans"].faults = Faults(status=503)
    raw = ask(url)
    assert raw.headers["x-rerank-deployment"] == "fallback/passthrough"
    assert all(r.relevant_spans is None for r in raw.data.results)
    (warning,) = raw.data.meta.warnings
    assert warning.endswith("(fallback: passthrough); no relevant_spans")
    assert upstreams["plain"].calls == []  # never tried: it cannot return spans


def test_span_support_defaults_to_cohere_api_rerank_5_and_is_configurable() -> None:
    def catalog(base_url: str, model: str, **deployment: Any) -> Catalog:
        data = {
            "auth": {"mode": "none"},
            "providers": {"p": {"type": "cohere", "base_url": base_url, "api_key": "k"}},
            "models": {"m": {"deployments": [{"provider": "p", "model": model, **deployment}]}},
        }
        return Catalog(parse_config(data, {}))

    assert catalog("https://api.cohere.com", "rerank-v5.0-pro").spans_capable("m")
    assert catalog("https://api.cohere.ai", "rerank-v5.0-fast").spans_capable("m")
    assert not catalog("https://api.cohere.com", "rerank-v4.0-pro").spans_capable("m")
    assert not catalog("https://proxy.internal", "rerank-v5.0-pro").spans_capable("m")
    assert catalog("https://proxy.internal", "rerank-v5.0-pro", relevant_spans=True).spans_capable(
        "m"
    )
    assert not catalog(
        "https://api.cohere.com", "rerank-v5.0-pro", relevant_spans=False
    ).spans_capable("m")


def test_only_cohere_shaped_deployments_can_be_told_they_return_spans() -> None:
    data = {
        "auth": {"mode": "none"},
        "providers": {"t": {"type": "tei", "base_url": "http://tei.invalid"}},
        "models": {"m": {"deployments": [{"provider": "t", "relevant_spans": True}]}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert (
        "models.m.deployments[0].relevant_spans: provider type tei has no relevant_spans in "
        "its API (types that do: cohere, azure)" in str(info.value)
    )
