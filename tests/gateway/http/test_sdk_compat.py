"""The real `cohere` SDK against the gateway: what a team gets after switching base_url."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import cohere
import pytest
from cohere.core.api_error import ApiError as SdkApiError

from tests.conftest import TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults, fake_score

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]
QUERY = "What is the capital of the United States?"


def expected_order(query: str, docs: list[str]) -> list[int]:
    scores = [fake_score(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i))


def client_v2(url: str, key: str = TEAM_KEY) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=key, base_url=url, max_retries=0, timeout=10)


def test_client_v2_gets_cohere_results(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    fake, _ = fake_cohere
    raw = client_v2(gateway_url).with_raw_response.rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3
    )
    res = raw.data
    assert [r.index for r in res.results] == expected_order(QUERY, DOCS)[:3]
    assert res.results[0].relevance_score == fake_score(QUERY, DOCS[res.results[0].index])
    assert res.meta.api_version.version == "2"
    assert res.meta.billed_units.search_units == 1
    assert raw.headers["x-rerank-model"] == "rerank-v3.5"
    assert raw.headers["x-rerank-deployment"] == "cohere-a/rerank-v3.5"
    assert "upstream;dur=" in raw.headers["server-timing"]
    # The gateway asks upstream for every score and applies top_n itself, with a clean body.
    assert fake.calls == [{"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}]


def test_explicit_nulls_from_the_sdk_are_accepted(gateway_url: str) -> None:
    res = client_v2(gateway_url).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=None, max_tokens_per_doc=None
    )
    assert len(res.results) == len(DOCS)


def test_max_tokens_per_doc_is_forwarded(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    client_v2(gateway_url).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, max_tokens_per_doc=512
    )
    assert fake_cohere[0].calls[-1]["max_tokens_per_doc"] == 512


async def test_async_client_v2(gateway_url: str) -> None:
    client = cohere.AsyncClientV2(api_key=TEAM_KEY, base_url=gateway_url, max_retries=0)
    results = await asyncio.gather(
        *(
            client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2)
            for _ in range(5)
        )
    )
    for res in results:
        assert [r.index for r in res.results] == expected_order(QUERY, DOCS)[:2]


def test_v1_client_with_object_documents_rank_fields_and_return_documents(gateway_url: str) -> None:
    docs = [
        {"title": "Nevada", "text": DOCS[0], "id": "a"},
        {"title": "United States", "text": DOCS[2], "id": "b"},
    ]
    client = cohere.Client(api_key=TEAM_KEY, base_url=gateway_url, max_retries=0)
    res = client.rerank(
        model="rerank-v3.5",
        query=QUERY,
        documents=docs,
        rank_fields=["title", "text"],
        return_documents=True,
        top_n=1,
    )
    assert res.results[0].index == 1
    assert res.results[0].document.text == DOCS[2]
    assert res.results[0].document.id == "b"  # other fields come back as sent
    assert res.meta.api_version.version == "1"


def test_v1_client_plain_strings_without_documents(gateway_url: str) -> None:
    client = cohere.Client(api_key=TEAM_KEY, base_url=gateway_url, max_retries=0)
    res = client.rerank(model="local-bm25", query="capital United States", documents=DOCS)
    assert res.results[0].index == 2
    assert res.results[0].document is None


def test_base_url_with_v1_suffix_still_works(gateway_url: str) -> None:
    res = client_v2(gateway_url + "/v1").rerank(model="local-bm25", query="Nevada", documents=DOCS)
    assert res.results[0].index == 0


@pytest.mark.parametrize(
    ("call", "error_type", "status"),
    [
        (
            lambda c: c.rerank(model="rerank-v3.5", query=" ", documents=DOCS),
            cohere.BadRequestError,
            400,
        ),
        (
            lambda c: c.rerank(model="rerank-v3.5", query=QUERY, documents=[]),
            cohere.BadRequestError,
            400,
        ),
        (lambda c: c.rerank(model="nope", query=QUERY, documents=DOCS), cohere.NotFoundError, 404),
        (
            lambda c: c.rerank(
                model="rerank-v3.5",
                query=QUERY,
                documents=DOCS,
                request_options={"additional_body_parameters": {"top_k": 2}},
            ),
            cohere.UnprocessableEntityError,
            422,
        ),
    ],
)
def test_caller_mistakes_raise_typed_sdk_errors(
    gateway_url: str, call: Callable[[cohere.ClientV2], object], error_type: type, status: int
) -> None:
    with pytest.raises(error_type) as info:
        call(client_v2(gateway_url))
    assert info.value.status_code == status
    assert info.value.body["message"]
    assert info.value.body["id"]


def test_unknown_key_is_unauthorized(gateway_url: str) -> None:
    with pytest.raises(cohere.UnauthorizedError) as info:
        client_v2(gateway_url, key="wrong").rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.body["message"] == "invalid api token"


def test_upstream_throttling_is_429_with_retry_after(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    fake_cohere[0].faults = Faults(status=429, retry_after="7")
    with pytest.raises(cohere.TooManyRequestsError) as info:
        client_v2(gateway_url).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.headers["retry-after"] == "7"
    assert "429" in info.value.body["message"]


def test_upstream_outage_is_503_with_retry_after(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    fake_cohere[0].faults = Faults(status=500)
    with pytest.raises(cohere.ServiceUnavailableError) as info:
        client_v2(gateway_url).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.headers["retry-after"] == "1"
    assert "cohere-a answered 500" in info.value.body["message"]


def test_sdk_retries_succeed_once_upstream_recovers(
    gateway_url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    fake, _ = fake_cohere
    fake.faults = Faults(status=503, retry_after="0", times=1)
    client = cohere.ClientV2(api_key=TEAM_KEY, base_url=gateway_url, max_retries=2)
    res = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert len(res.results) == len(DOCS)
    assert len(fake.calls) == 2


def test_error_bodies_are_json_for_the_generic_sdk_error(start_gateway: Callable[..., str]) -> None:
    # A model whose only upstream refuses connections: the SDK still gets a JSON body.
    from tests.support.servers import free_port

    url = start_gateway(gateway_config({"dead": f"http://127.0.0.1:{free_port()}"}))
    with pytest.raises(SdkApiError) as info:
        client_v2(url).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert info.value.status_code == 503
    assert "cannot reach dead" in info.value.body["message"]
