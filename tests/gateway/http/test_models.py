"""Model discovery (`GET /v1/models`, `GET /v1/models/{name}`) with the real `cohere` SDK,
the default model of `/v1/rerank`, and the score scale each answer names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cohere
import httpx
import jsonschema
import pytest

from gateway.http.auth import hash_key
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, teams_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.fakes.jina import JINA_KEY, FakeJina
from tests.support.servers import ServerLoop

DOCS = ["Paris is the capital of France", "bananas are yellow"]


def cohere_provider(url: str) -> dict[str, Any]:
    return {"type": "cohere", "base_url": url, "api_key": "upstream-key", "timeout_s": 5}


def config(cohere_url: str, jina_url: str, **server: Any) -> dict[str, Any]:
    data = teams_config(
        {
            "cohere-a": cohere_provider(cohere_url),
            "jina": {"type": "jina", "base_url": jina_url, "api_key": JINA_KEY, "timeout_s": 5},
            "nim": {"type": "nim", "base_url": "http://127.0.0.1:9", "score": "logit"},
            "offline": {"type": "local"},
        },
        {
            "rerank-v3.5": {"deployments": [{"provider": "cohere-a"}], "fallback": "passthrough"},
            "rerank-v4.0-pro": {"deployments": [{"provider": "cohere-a"}]},
            "jina-reranker-v3": {"deployments": [{"provider": "jina"}]},
            "nv": {"deployments": [{"provider": "nim", "model": "nv-rerankqa"}]},
            "tuned": {
                "deployments": [{"provider": "nim", "model": "x", "score_scale": "calibrated"}],
                "context_length": 1024,
            },
            "local-bm25": {"deployments": [{"provider": "offline"}]},
            "rerank-auto": {"tiers": {"pro": "rerank-v4.0-pro", "fast": "rerank-v3.5"}},
        },
        server=server,
    )
    data["teams"]["ads"]["models"] = ["local-bm25", "rerank-v3.5"]
    return data


@pytest.fixture
def fake(servers: ServerLoop) -> tuple[FakeCohere, str]:
    upstream = FakeCohere()
    return upstream, servers.serve(upstream.app())


@pytest.fixture
def gateway(
    servers: ServerLoop, fake: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> str:
    jina = servers.serve(FakeJina().app())
    return start_gateway(config(fake[1], jina))


def sdk(url: str, key: str = TEAM_KEY) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=key, base_url=url, max_retries=0, timeout=10)


ALL = [
    "rerank-v3.5",
    "rerank-v4.0-pro",
    "jina-reranker-v3",
    "nv",
    "tuned",
    "local-bm25",
    "rerank-auto",
]


def test_the_sdk_lists_every_model_in_config_order_with_its_facts(gateway: str) -> None:
    listing = sdk(gateway).models.list(endpoint="rerank")
    assert [m.name for m in listing.models] == ALL
    assert listing.next_page_token is None
    by_name = {m.name: m for m in listing.models}
    v35 = by_name["rerank-v3.5"]
    assert (v35.endpoints, v35.finetuned, v35.context_length) == (["rerank"], False, 4096)
    assert v35.default_endpoints == ["rerank"]  # the v1 default: first in config order
    assert by_name["rerank-v4.0-pro"].default_endpoints == []
    assert by_name["rerank-v4.0-pro"].context_length == 32768
    assert by_name["jina-reranker-v3"].context_length == 131072
    assert by_name["nv"].context_length is None  # not known: left out, not guessed
    assert by_name["tuned"].context_length == 1024  # the config's
    # The gateway's own facts ride along as extra fields, which the SDK keeps.
    facts = {m.name: (m.score_scale, m.scoring) for m in listing.models}  # type: ignore[attr-defined]
    assert facts == {
        "rerank-v3.5": ("calibrated", "pointwise"),
        "rerank-v4.0-pro": ("calibrated", "pointwise"),
        "jina-reranker-v3": (None, "listwise"),
        "nv": ("logit", "pointwise"),
        "tuned": ("calibrated", "pointwise"),
        "local-bm25": ("bm25", "listwise"),
        "rerank-auto": ("calibrated", "pointwise"),
    }
    alias = by_name["rerank-auto"]
    assert alias.tiers == {"pro": "rerank-v4.0-pro", "fast": "rerank-v3.5"}  # type: ignore[attr-defined]
    assert alias.context_length == 4096  # the shorter of its tiers'


def test_one_model_and_an_unknown_one(gateway: str) -> None:
    model = sdk(gateway).models.get("rerank-auto")
    assert model.name == "rerank-auto" and model.endpoints == ["rerank"]
    assert [d["name"] for d in model.deployments] == [  # type: ignore[attr-defined]
        "cohere-a/rerank-v4.0-pro",
        "cohere-a/rerank-v3.5",
    ]
    with pytest.raises(cohere.NotFoundError) as info:
        sdk(gateway).models.get("rerank-v9")
    assert "model 'rerank-v9' not found" in info.value.body["message"]


def test_a_team_sees_only_the_models_it_may_use(gateway: str) -> None:
    co = sdk(gateway, OTHER_TEAM_KEY)
    listing = co.models.list()
    assert [m.name for m in listing.models] == ["rerank-v3.5", "local-bm25"]
    with pytest.raises(cohere.NotFoundError):
        co.models.get("rerank-v4.0-pro")
    with pytest.raises(cohere.UnauthorizedError):
        sdk(gateway, "wrong-key").models.list()


def test_pages_follow_next_page_token(gateway: str) -> None:
    co, names, token = sdk(gateway), [], None
    for _ in range(len(ALL) + 1):  # bounded: one page per model at most
        page = co.models.list(page_size=3, page_token=token)
        assert len(page.models) <= 3
        names += [m.name for m in page.models]
        token = page.next_page_token
        if token is None:
            break
    assert names == ALL


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"endpoint": "chat"}, []),
        ({"endpoint": "rerank", "default_only": "true"}, ["rerank-v3.5"]),
        ({"page_size": "2.0"}, ALL[:2]),
    ],
)
def test_filters(gateway: str, query: dict[str, str], expected: list[str]) -> None:
    listing = httpx.get(
        gateway + "/v1/models", params=query, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    )
    assert [m["name"] for m in listing.json()["models"]] == expected


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"page_size": "0"}, "page_size must be a whole number from 1 to 1000"),
        ({"page_size": "1.5"}, "page_size must be a whole number"),
        ({"page_token": "abc"}, "page_token must be the next_page_token"),
        ({"endpoint": "speak"}, "endpoint must be one of chat, embed"),
        ({"default_only": "true"}, "default_only is only valid together with endpoint"),
    ],
)
def test_bad_queries_are_400s_that_say_what_to_change(
    gateway: str, query: dict[str, str], says: str
) -> None:
    with pytest.raises(cohere.BadRequestError) as info:
        sdk(gateway).models.list(**query)  # type: ignore[arg-type]
    assert says in info.value.body["message"]


async def test_listing_answers_match_the_openapi_document(gateway: str) -> None:
    auth = {"Authorization": f"Bearer {TEAM_KEY}"}
    spec = httpx.get(gateway + "/openapi.json").json()

    def check(schema: str, answer: Any) -> None:
        jsonschema.Draft202012Validator(
            {**spec, "$ref": f"#/components/schemas/{schema}"}
        ).validate(answer)

    check("ModelList", httpx.get(gateway + "/v1/models?page_size=2", headers=auth).json())
    for name in ALL:
        check("Model", httpx.get(f"{gateway}/v1/models/{name}", headers=auth).json())


# --- /v1/rerank without a model ---------------------------------------------------------


def test_v1_without_a_model_uses_the_first_model_the_team_may_use(
    gateway: str, fake: tuple[FakeCohere, str]
) -> None:
    for key, expected in ((TEAM_KEY, "rerank-v3.5"), (OTHER_TEAM_KEY, "rerank-v3.5")):
        raw = cohere.Client(api_key=key, base_url=gateway, max_retries=0).with_raw_response
        answer = raw.rerank(query="capital", documents=DOCS)
        assert answer.headers["x-rerank-model"] == expected
    assert [call["model"] for call in fake[0].calls] == ["rerank-v3.5"]  # then from the cache


def test_v1_default_follows_team_access_and_the_configured_default(
    servers: ServerLoop, fake: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    data = config(fake[1], servers.serve(FakeJina().app()))
    data["teams"]["ads"]["models"] = ["local-bm25"]
    url = start_gateway(data)
    raw = cohere.Client(api_key=OTHER_TEAM_KEY, base_url=url, max_retries=0).with_raw_response
    assert raw.rerank(query="capital", documents=DOCS).headers["x-rerank-model"] == "local-bm25"
    configured = start_gateway(config(fake[1], "http://127.0.0.1:9", v1_default_model="nv"))
    listing = sdk(configured).models.list(endpoint="rerank", default_only=True)
    assert [m.name for m in listing.models] == ["nv"]


# --- the score scale of each answer ------------------------------------------------------


def scale_of(url: str, model: str) -> str | None:
    answer = httpx.post(
        url + "/v2/rerank",
        json={"model": model, "query": "capital", "documents": DOCS},
        headers={"Authorization": f"Bearer {TEAM_KEY}"},
    )
    assert answer.status_code == 200
    return answer.headers.get("X-Rerank-Score-Scale")


def test_each_answer_names_the_scale_of_what_scored_it(
    gateway: str, fake: tuple[FakeCohere, str]
) -> None:
    assert scale_of(gateway, "rerank-v3.5") == "calibrated"
    assert scale_of(gateway, "rerank-v3.5") == "calibrated"  # a cache hit: the model's
    assert scale_of(gateway, "local-bm25") == "bm25"
    assert scale_of(gateway, "jina-reranker-v3") is None  # not known: no header
    # A fallback changes the scale, and the header says so.
    fake[0].faults = Faults(status=503)
    answer = httpx.post(
        gateway + "/v2/rerank",
        json={"model": "rerank-v3.5", "query": "other", "documents": DOCS},
        headers={"Authorization": f"Bearer {TEAM_KEY}"},
    )
    assert answer.headers["X-Rerank-Deployment"] == "fallback/passthrough"
    assert answer.headers["X-Rerank-Score-Scale"] == "placeholder"


def test_the_listing_holds_no_secrets(
    fake: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    # A team key's digest in the config is no model fact: the listing holds none.
    url = start_gateway(config(fake[1], "http://127.0.0.1:9"))
    text = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {TEAM_KEY}"}).text
    assert hash_key(TEAM_KEY) not in text and "upstream-key" not in text
