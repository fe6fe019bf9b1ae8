"""Which of the caller's optional fields reach which upstream (the table in docs/api.md).

The gateway applies `top_n`, `return_documents`, `rank_fields` and `max_chunks_per_doc`
itself; `max_tokens_per_doc`, `priority` and `relevant_spans` go to the upstreams whose
APIs take them. The first test pins each provider type's body for a call that carries
every optional field; the others check the path end to end with the SDK and the fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cohere
import pytest

from providers.registry import PROVIDER_TYPES
from providers.types import SpanOptions, UpstreamCall
from tests.conftest import TEAM_KEY
from tests.fakes.azure import AZURE_KEY, FakeAzure
from tests.fakes.cohere import FakeCohere
from tests.fakes.vllm import SERVED_MODEL, FakeVllm
from tests.support.clouds import client
from tests.support.selfhosted import provider_config
from tests.support.servers import ServerLoop

CALL = UpstreamCall(
    "m",
    "q",
    ["a"],
    timeout_s=5,
    max_tokens_per_doc=512,
    priority=3,
    relevant_spans=SpanOptions(0.2, 2),
)
SPANS = {"mode": "enabled", "threshold": 0.2, "max_spans": 2}
BASE = {"model", "query", "documents"}


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("cohere", {}, {"max_tokens_per_doc": 512, "priority": 3, "relevant_spans": SPANS}),
        (
            "cohere",
            {"forward_priority": False},
            {"max_tokens_per_doc": 512, "relevant_spans": SPANS},
        ),
        ("azure", {}, {"max_tokens_per_doc": 512, "relevant_spans": SPANS}),
        ("azure", {"path": "/v1/rerank"}, {"relevant_spans": SPANS}),
        ("vllm", {}, {"max_tokens_per_doc": 512}),
        ("vllm", {"forward_priority": True}, {"max_tokens_per_doc": 512, "priority": 3}),
        ("infinity", {}, {}),
        ("jina", {"api_key": "k"}, {"return_documents": False}),
        ("voyage", {"api_key": "k"}, {"return_documents": False, "truncation": True}),
    ],
)
def test_what_each_cohere_shaped_upstream_receives(
    kind: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = _body(kind, {"base_url": "http://upstream.invalid", **options})
    assert {k: v for k, v in body.items() if k not in BASE} == expected


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("tei", {"base_url": "http://tei.invalid"}, {"query", "texts"}),
        ("nim", {"base_url": "http://nim.invalid"}, {"model", "query", "passages", "truncate"}),
        ("bedrock", {"region": "us-east-1", "api_key": "k"}, {"query", "documents", "api_version"}),
        (
            "bedrock",
            {"region": "us-east-1", "api_key": "k", "forward_max_tokens_per_doc": True},
            {"query", "documents", "api_version", "max_tokens_per_doc"},
        ),
        (
            "oci",
            {"compartment_id": "ocid1.compartment.oc1..x", "region": "us-chicago-1"},
            {"input", "documents", "compartmentId", "servingMode", "maxTokensPerDocument"},
        ),
        (
            "azure_semantic",
            {"endpoint": "http://az.invalid", "api_key": "k"},
            {"query", "documents", "returnDocuments", "model"},
        ),
        (
            "vertex",
            {"project": "p", "credentials_json": "{}"},
            {"model", "query", "records", "ignoreRecordDetailsInResponse"},
        ),
        ("pinecone", {"api_key": "k"}, {"model", "query", "documents", "return_documents"}),
        ("mixedbread", {"api_key": "k"}, {"model", "query", "input", "return_input"}),
        ("llamacpp", {"base_url": "http://llama.invalid"}, {"model", "query", "documents"}),
        (
            "openai_rerank",
            {"base_url": "http://t.invalid", "api_key": "k"},
            {"model", "query", "documents"},
        ),
        (
            "openai_rerank",
            {"base_url": "http://d.invalid", "api_key": "k", "shape": "pairwise"},
            {"queries", "documents"},
        ),
    ],
)
def test_what_the_other_upstreams_receive(
    kind: str, options: dict[str, Any], expected: set[str]
) -> None:
    assert set(_body(kind, options)) == expected  # no priority, no spans: not in their APIs


def _body(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    provider_type = PROVIDER_TYPES[kind]
    provider: Any = provider_type.build("p", provider_type.options(**options))
    try:
        return dict(provider.body(CALL))
    except TypeError:  # the sub-batching providers take the batch's documents too
        return dict(provider.body(CALL, CALL.documents))


def test_priority_reaches_cohere_from_the_sdk(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    co = cohere.ClientV2(api_key=TEAM_KEY, base_url=gateway_url, max_retries=0, timeout=10)
    co.rerank(model="rerank-v3.5", query="q", documents=["a", "b"], priority=7)
    co.rerank(model="rerank-v3.5", query="q", documents=["c"])
    assert fake_cohere[0].calls[0]["priority"] == 7
    assert "priority" not in fake_cohere[0].calls[1]  # not sent when the caller set none


def test_azure_gets_no_priority(servers: ServerLoop, start_gateway: Callable[..., str]) -> None:
    fake = FakeAzure()
    url = servers.serve(fake.app())
    provider = {"type": "azure", "base_url": url, "api_key": AZURE_KEY, "timeout_s": 5}
    gateway = start_gateway(provider_config({"azure": provider}, "rerank-v3.5", "rerank-v3.5"))
    client(gateway).rerank(model="rerank-v3.5", query="q", documents=["a"], priority=7)
    assert fake.calls == [{"model": "rerank-v3.5", "query": "q", "documents": ["a"]}]


@pytest.mark.parametrize("forward", [False, True])
def test_vllm_gets_priority_only_when_it_schedules_by_priority(
    servers: ServerLoop, start_gateway: Callable[..., str], forward: bool
) -> None:
    # Without priority scheduling vLLM refuses a non-zero priority: not sending it is
    # what keeps such a server working.
    fake = FakeVllm(priority_scheduling=forward)
    url = servers.serve(fake.app())
    provider = {"type": "vllm", "base_url": url, "timeout_s": 5, "forward_priority": forward}
    gateway = start_gateway(provider_config({"vllm": provider}, "bge", SERVED_MODEL))
    res = client(gateway).rerank(model="bge", query="q", documents=["a", "b"], priority=9)
    assert len(res.results) == 2
    assert fake.calls[0].get("priority") == (9 if forward else None)
