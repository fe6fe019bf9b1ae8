"""The `tei` provider through the gateway against the strict TEI fake: sub-batches of
`max_batch_size` sent at once and merged by offset, `texts` and the bare-array answer,
`{error, error_type}` mapped to the caller and to failover, the optional key."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cohere.core.api_error import ApiError as SdkApiError

from gateway.config import ConfigError, parse_config
from tests.fakes.cohere import Faults
from tests.fakes.strict import token_count
from tests.fakes.tei import FakeTei
from tests.support.clouds import client, expected_order, expected_scores
from tests.support.selfhosted import MANY_DOCS, QUERY, direct, post_sync, provider_config
from tests.support.servers import ServerLoop

MODEL = "BAAI/bge-reranker-v2-m3"


def tei(url: str, **settings: object) -> dict[str, object]:
    return {"type": "tei", "base_url": url, "timeout_s": 5, **settings}


def serve(servers: ServerLoop, count: int = 1, **options: object) -> list[tuple[FakeTei, str]]:
    fakes = [FakeTei(**options) for _ in range(count)]  # type: ignore[arg-type]
    return [(fake, servers.serve(fake.app())) for fake in fakes]


def test_100_documents_become_4_concurrent_calls_merged_in_order(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    # The fake answers none of them until all 4 are in: sent one by one, they would time out.
    ((fake, url),) = serve(servers, rendezvous=4)
    gateway = start_gateway(provider_config({"tei": tei(url, max_batch_size=32)}, "bge", MODEL))
    raw = client(gateway).with_raw_response.rerank(
        model="bge", query=QUERY, documents=MANY_DOCS, top_n=10
    )
    order = expected_order(QUERY, MANY_DOCS)
    assert [r.index for r in raw.data.results] == order[:10]
    assert [r.relevance_score for r in raw.data.results] == expected_scores(QUERY, MANY_DOCS)[:10]
    assert sorted(fake.batch_sizes) == [4, 32, 32, 32]
    slices = sorted(tuple(c["texts"]) for c in fake.calls)
    assert slices == sorted(tuple(MANY_DOCS[i : i + 32]) for i in range(0, 100, 32))
    # TEI's field names only: no `documents`, `model` or `top_n` (the fake refuses them too).
    assert all(set(c) == {"query", "texts"} for c in fake.calls)
    assert raw.headers["x-rerank-deployment"] == f"tei/{MODEL}"


def test_the_whole_answer_is_right_for_every_batch_size(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    ((fake, url),) = serve(servers, max_client_batch_size=7)
    gateway = start_gateway(provider_config({"tei": tei(url, max_batch_size=7)}, "bge", MODEL))
    docs = MANY_DOCS[:45]
    res = client(gateway).rerank(model="bge", query=QUERY, documents=docs)
    assert [r.index for r in res.results] == expected_order(QUERY, docs)
    assert sorted(fake.batch_sizes) == [3, 7, 7, 7, 7, 7, 7]


def test_tokens_are_summed_from_every_sub_batch(servers: ServerLoop) -> None:
    ((_, url),) = serve(servers)
    result = direct(servers, "tei", {"base_url": url, "max_batch_size": 32}, MANY_DOCS)
    slices = [MANY_DOCS[i : i + 32] for i in range(0, 100, 32)]
    assert result.tokens == sum(token_count(QUERY, *s) for s in slices)
    assert result.search_units is None  # TEI bills nothing: the gateway estimates


def test_return_documents_and_top_n_on_v1(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    ((_, url),) = serve(servers)
    gateway = start_gateway(provider_config({"tei": tei(url)}, "bge", MODEL))
    docs = MANY_DOCS[:40]
    body = {"model": "bge", "query": QUERY, "documents": docs, "top_n": 3, "return_documents": True}
    resp = post_sync(gateway, body, "/v1/rerank")
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["index"] for r in results] == expected_order(QUERY, docs)[:3]
    assert [r["document"] for r in results] == [{"text": docs[r["index"]]} for r in results]
    plain = post_sync(gateway, {**body, "return_documents": False}, "/v1/rerank").json()["results"]
    assert all("document" not in r for r in plain)


def test_key_is_sent_as_bearer_and_a_missing_one_is_a_gateway_problem(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    ((fake, url),) = serve(servers, api_key="tei-secret")
    with pytest.raises(SdkApiError) as info:
        client(start_gateway(provider_config({"tei": tei(url)}, "bge", MODEL))).rerank(
            model="bge", query=QUERY, documents=MANY_DOCS[:3]
        )
    assert info.value.status_code == 502
    assert "tei answered 401" in info.value.body["message"]
    assert "a gateway configuration problem" in info.value.body["message"]
    keyed = start_gateway(provider_config({"tei": tei(url, api_key="tei-secret")}, "bge", MODEL))
    res = client(keyed).rerank(model="bge", query=QUERY, documents=MANY_DOCS[:3])
    assert [r.index for r in res.results] == expected_order(QUERY, MANY_DOCS[:3])
    assert fake.headers[-1]["Authorization"] == "Bearer tei-secret"


# (TEI status, its error_type, what the caller gets, whether another deployment is tried)
ERRORS = [
    (429, "overloaded", 429, True),
    (503, "unhealthy", 503, True),
    (424, "backend", 503, True),
    (422, "validation", 422, False),
    (400, "empty", 400, False),
]


@pytest.mark.parametrize(("status", "error_type", "caller", "fails_over"), ERRORS)
def test_errors_map_to_the_caller_status(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    status: int,
    error_type: str,
    caller: int,
    fails_over: bool,
) -> None:
    ((fake, url),) = serve(servers)
    fake.faults = Faults(status=status, retry_after="3")
    gateway = start_gateway(provider_config({"tei": tei(url)}, "bge", MODEL))
    resp = post_sync(gateway, {"model": "bge", "query": QUERY, "documents": MANY_DOCS[:5]})
    assert resp.status_code == caller
    message = resp.json()["message"]
    assert f"tei answered {status} {error_type}: injected failure {status}" in message
    if caller == 429:
        assert resp.headers["retry-after"] == "3"
    if not fails_over:
        assert message.startswith("the upstream rejected the request")
        assert len(fake.calls) == 1  # the caller's mistake is not retried


@pytest.mark.parametrize(("status", "error_type", "caller", "fails_over"), ERRORS)
def test_retryable_errors_fail_over_to_the_next_deployment(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    status: int,
    error_type: str,
    caller: int,
    fails_over: bool,
) -> None:
    (first, first_url), (second, second_url) = serve(servers, 2)
    first.faults = Faults(status=status)
    data = provider_config({"tei-a": tei(first_url), "tei-b": tei(second_url)}, "bge", MODEL)
    resp = post_sync(start_gateway(data), {"model": "bge", "query": QUERY, "documents": MANY_DOCS[:5]})
    if fails_over:
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-rerank-deployment"] == f"tei-b/{MODEL}"
        assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, MANY_DOCS[:5])
    else:
        assert resp.status_code == caller
        assert second.calls == []


def test_one_failed_sub_batch_fails_the_attempt_and_nothing_partial_is_kept(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    (first, first_url), (second, second_url) = serve(servers, 2)
    first.poison = MANY_DOCS[70]  # the third slice (64..95) fails on tei-a, every time
    data = provider_config({"tei-a": tei(first_url), "tei-b": tei(second_url)}, "bge", MODEL)
    resp = post_sync(start_gateway(data), {"model": "bge", "query": QUERY, "documents": MANY_DOCS})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == f"tei-b/{MODEL}"
    assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, MANY_DOCS)
    assert sorted(second.batch_sizes) == [4, 32, 32, 32]  # tei-b scored all 100 itself
    poisoned = [c for c in first.calls if MANY_DOCS[70] in c["texts"]]
    assert poisoned and all(c["texts"] == MANY_DOCS[64:96] for c in poisoned)


def test_a_batch_size_above_the_servers_says_what_to_change(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    ((_, url),) = serve(servers)  # TEI's default --max-client-batch-size of 32
    gateway = start_gateway(provider_config({"tei": tei(url, max_batch_size=64)}, "bge", MODEL))
    resp = post_sync(gateway, {"model": "bge", "query": QUERY, "documents": MANY_DOCS[:40]})
    assert resp.status_code == 422
    assert "batch size 40 > maximum allowed batch size 32" in resp.json()["message"]
    assert "set providers.tei.max_batch_size to at most 32" in resp.json()["message"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "providers.t.base_url: is required"),
        ({"base_url": "tei:8080"}, "base_url must start with http:// or https://"),
        ({"base_url": "http://tei", "max_batch_size": 0}, "max_batch_size: must be at least 1"),
        ({"base_url": "http://tei", "path": "rerank"}, "path must start with /"),
        ({"base_url": "http://tei", "top_n": 3}, "providers.t.top_n: unknown key"),
    ],
)
def test_tei_config_is_validated(settings: dict[str, object], problem: str) -> None:
    data = provider_config({"t": {"type": "tei", **settings}}, "bge", MODEL)
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert problem in str(info.value)
