"""The score cache through the HTTP API, with the fake Cohere upstream and real Redis:
hits, partial hits, coalescing, two gateway processes, Redis outages, headers, privacy."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cohere
import pytest
import redis
import yaml

from tests.conftest import OTHER_TEAM_KEY, REDIS_URL, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults, fake_score
from tests.support.calls import post
from tests.support.processes import gateway_processes
from tests.support.redis_server import OwnRedis
from tests.support.servers import ServerLoop

QUERY = "how do reusable rockets land"


def documents(n: int, start: int = 0) -> list[str]:
    topics = ["rockets land on drone ships", "gardens need water", "reusable boosters land"]
    return [f"doc {i}: {topics[i % 3]}" for i in range(start, start + n)]


def body(docs: list[str], **extra: Any) -> dict[str, Any]:
    return {"model": "rerank-v3.5", "query": QUERY, "documents": docs, **extra}


def ranking(answer: dict[str, Any]) -> list[tuple[int, float]]:
    return [(r["index"], r["relevance_score"]) for r in answer["results"]]


def expected_ranking(docs: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    scored = sorted(
        ((i, fake_score(QUERY, d)) for i, d in enumerate(docs)), key=lambda p: (-p[1], p[0])
    )
    return scored[:top_n] if top_n else scored


def redis_cache(prefix: str, **options: Any) -> dict[str, Any]:
    return {
        "cache": {"backend": "redis", "key_prefix": prefix, **options},
        "state": {"redis_url": REDIS_URL},
    }


async def metric(url: str, name: str, labels: dict[str, str]) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("backend", ["memory", "redis", "tiered"])
async def test_repeated_request_is_a_hit_without_upstream_call(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    cache_prefix: str,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    sections = redis_cache(cache_prefix, backend=backend)
    url = start_gateway(gateway_config({"cohere-a": upstream}, **sections))
    docs = documents(30)
    status, headers, first = await post(url, body(docs))
    assert status == 200 and headers["X-Cache"] == "miss"
    assert first["meta"]["billed_units"] == {"search_units": 1}
    status, headers, second = await post(url, body(docs))
    assert status == 200 and headers["X-Cache"] == "hit"
    assert len(fake.calls) == 1
    assert second["meta"]["billed_units"] == {"search_units": 0}
    assert "X-Rerank-Deployment" not in headers
    assert ranking(second) == ranking(first) == expected_ranking(docs)


async def test_partial_hit_sends_only_the_new_documents(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], cache_prefix: str
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(gateway_config({"cohere-a": upstream}, **redis_cache(cache_prefix)))
    old, new = documents(50), documents(10, start=50)
    await post(url, body(old))
    mixed = old[:40] + new
    random.Random(3).shuffle(mixed)
    status, headers, answer = await post(url, body(mixed, top_n=15))
    assert status == 200 and headers["X-Cache"] == "partial"
    assert len(fake.calls) == 2
    assert fake.calls[-1]["documents"] == [d for d in mixed if d in new]
    assert answer["meta"]["billed_units"] == {"search_units": 1}
    # The same answer an uncached gateway gives.
    plain = start_gateway(gateway_config({"cohere-a": upstream}, cache={"backend": "none"}))
    _, plain_headers, uncached = await post(plain, body(mixed, top_n=15))
    assert plain_headers["X-Cache"] == "bypass"
    assert ranking(answer) == ranking(uncached) == expected_ranking(mixed, 15)


async def test_fifty_concurrent_identical_requests_make_one_upstream_call(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], cache_prefix: str
) -> None:
    fake, upstream = fake_cohere
    fake.faults = Faults(delay_s=0.3)  # keeps the first call open while the others arrive
    url = start_gateway(gateway_config({"cohere-a": upstream}, **redis_cache(cache_prefix)))
    docs = documents(20)
    answers = await asyncio.gather(*(post(url, body(docs)) for _ in range(50)))
    assert len(fake.calls) == 1
    assert all(status == 200 for status, _, _ in answers)
    assert all(ranking(a) == expected_ranking(docs) for _, _, a in answers)
    caches = sorted(h["X-Cache"] for _, h, _ in answers)
    assert caches == ["hit"] * 49 + ["miss"]
    assert sum(a["meta"]["billed_units"]["search_units"] for _, _, a in answers) == 1


def test_v1_top_n_and_return_documents_are_right_on_hits(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(gateway_config({"cohere-a": upstream}))
    client = cohere.Client(api_key=TEAM_KEY, base_url=url, max_retries=0)
    docs = [{"text": d, "id": str(i)} for i, d in enumerate(documents(12))]
    texts = [d["text"] for d in docs]
    first = client.rerank(model="rerank-v3.5", query=QUERY, documents=docs, top_n=12)
    hit = client.rerank(
        model="rerank-v3.5", query=QUERY, documents=docs, top_n=4, return_documents=True
    )
    assert len(fake.calls) == 1
    want = expected_ranking(texts, 4)
    assert [(r.index, r.relevance_score) for r in hit.results] == want
    assert [r.document.text for r in hit.results] == [texts[i] for i, _ in want]
    assert [(r.index, r.relevance_score) for r in first.results][:4] == want
    assert all(r.document is None for r in first.results)
    assert hit.meta.billed_units.search_units == 0


async def test_cache_control_no_cache_and_no_store(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    url = start_gateway(gateway_config({"cohere-a": upstream}))
    docs = documents(5)
    _, headers, _ = await post(url, body(docs), headers={"Cache-Control": "no-store"})
    assert headers["X-Cache"] == "bypass"
    _, headers, _ = await post(url, body(docs))
    assert headers["X-Cache"] == "miss"  # no-store wrote nothing
    _, headers, _ = await post(url, body(docs), headers={"Cache-Control": "max-age=0, no-cache"})
    assert headers["X-Cache"] == "miss"  # no-cache did not read
    assert len(fake.calls) == 3
    _, headers, _ = await post(url, body(docs))
    assert headers["X-Cache"] == "hit" and len(fake.calls) == 3


async def test_isolated_team_does_not_share_entries(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    data = gateway_config({"cohere-a": upstream})
    data["teams"]["ads"]["cache"] = "isolated"
    url = start_gateway(data)
    docs = documents(5)
    await post(url, body(docs), key=TEAM_KEY)
    _, headers, _ = await post(url, body(docs), key=OTHER_TEAM_KEY)
    assert headers["X-Cache"] == "miss" and len(fake.calls) == 2
    _, headers, _ = await post(url, body(docs), key=OTHER_TEAM_KEY)
    assert headers["X-Cache"] == "hit" and len(fake.calls) == 2


async def test_batch_relative_model_and_backend_none_bypass(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))
    local = {"model": "local-bm25", "query": "rockets", "documents": ["rockets land", "gardens"]}
    for _ in range(2):
        _, headers, _ = await post(url, local)
        assert headers["X-Cache"] == "bypass"
    off = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}, cache={"backend": "none"}))
    for _ in range(2):
        _, headers, _ = await post(off, body(documents(3)))
        assert headers["X-Cache"] == "bypass"
    assert len(fake_cohere[0].calls) == 2


async def test_cache_family_shares_across_models_and_ttl_per_model(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    cache_prefix: str,
    redis_client: redis.Redis,
) -> None:
    cohere_fake, azure_fake = FakeCohere(), FakeCohere()
    data = gateway_config(
        {"cohere-a": servers.serve(cohere_fake.app()), "azure-a": servers.serve(azure_fake.app())},
        **redis_cache(cache_prefix, ttl_s=3600),
    )
    # Two gateway models on different clouds that are the same model: one family.
    data["models"]["rerank-v3.5"]["deployments"] = [{"provider": "cohere-a"}]
    data["models"]["rerank-v3.5"]["cache_ttl_s"] = 600
    data["models"]["v35-azure"] = {
        "deployments": [{"provider": "azure-a", "model": "rerank-v3.5"}],
        "cache_family": "rerank-v3.5",
    }
    data["models"]["v35-isolated"] = {
        "deployments": [{"provider": "azure-a", "model": "rerank-v3.5"}]
    }
    url = start_gateway(data)
    docs = documents(4)
    await post(url, body(docs))
    _, headers, _ = await post(url, {**body(docs), "model": "v35-azure"})
    assert headers["X-Cache"] == "hit" and azure_fake.calls == []
    _, headers, _ = await post(url, {**body(docs), "model": "v35-isolated"})
    assert headers["X-Cache"] == "miss" and len(azure_fake.calls) == 1
    ttls = sorted(redis_client.pttl(k) for k in redis_client.scan_iter(match=cache_prefix + "*"))
    assert len(ttls) == 8
    assert all(590_000 < t <= 600_000 for t in ttls[:4])  # rerank-v3.5's own TTL
    assert all(3_590_000 < t <= 3_600_000 for t in ttls[4:])  # cache.ttl_s


async def test_redis_holds_only_digests_and_scores(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    cache_prefix: str,
    redis_client: redis.Redis,
) -> None:
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}, **redis_cache(cache_prefix)))
    secret_docs = [f"salary of employee {i} is confidential" for i in range(25)]
    await post(url, {"model": "rerank-v3.5", "query": "payroll secrets", "documents": secret_docs})
    keys = list(redis_client.scan_iter(match=cache_prefix + "*", count=1000))
    assert len(keys) == 25
    words = [b"salary", b"employee", b"confidential", b"payroll", b"secrets"]
    for key in keys:
        value = redis_client.get(key)
        assert value is not None and len(value) == 8
        assert len(key) == len(cache_prefix) + 16
        assert not any(w in key or w in value for w in words)


async def test_metrics_count_lookups_documents_and_units_saved(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    # Large requests on purpose (several search units each), above the default limit of 100.
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}, limits={"max_documents": 500}))
    await post(url, body(documents(250)))  # 3 units
    await post(url, body(documents(250)))  # hit: 3 units saved
    await post(url, body(documents(210) + documents(5, start=1000)))  # sends 5: 3 - 1 saved
    assert await metric(url, "rerank_cache_lookups_total", {"result": "miss"}) == 1
    assert await metric(url, "rerank_cache_lookups_total", {"result": "hit"}) == 1
    assert await metric(url, "rerank_cache_lookups_total", {"result": "partial"}) == 1
    assert await metric(url, "rerank_cache_documents_total", {"source": "cache"}) == 460
    assert await metric(url, "rerank_cache_documents_total", {"source": "upstream"}) == 255
    labels = {"model": "rerank-v3.5", "team": "search"}
    assert await metric(url, "rerank_cache_saved_search_units_total", labels) == 5
    # rerank-v3.5 is priced at $2.00 per 1,000 search units by default.
    assert await metric(url, "rerank_cache_saved_usd_total", labels) == pytest.approx(0.01)


async def test_redis_outage_serves_misses_and_recovers(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    own = OwnRedis()
    own.start()
    try:
        data = gateway_config(
            {"cohere-a": upstream},
            cache={"backend": "redis", "redis_backoff_s": 0, "redis_timeout_s": 0.2},
            state={"redis_url": own.url},
        )
        url = start_gateway(data)
        docs = documents(6)
        assert (await post(url, body(docs)))[1]["X-Cache"] == "miss"
        assert (await post(url, body(docs)))[1]["X-Cache"] == "hit"
        own.stop()
        for _ in range(2):
            status, headers, answer = await post(url, body(docs))
            assert status == 200 and headers["X-Cache"] == "miss"
            assert ranking(answer) == expected_ranking(docs)
        assert await metric(url, "rerank_cache_errors_total", {"backend": "redis"}) >= 2
        own.start()  # an empty Redis on the same port
        assert (await post(url, body(docs)))[1]["X-Cache"] == "miss"
        assert (await post(url, body(docs)))[1]["X-Cache"] == "hit"
        assert len(fake.calls) == 4
    finally:
        own.stop()


@pytest.fixture
def two_gateways(
    fake_cohere: tuple[FakeCohere, str], cache_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    data = gateway_config({"cohere-a": fake_cohere[1]}, **redis_cache(cache_prefix))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "COHERE_API_KEY"}
    with gateway_processes(path, tmp_path, env=env) as (_, urls):
        yield urls[0], urls[1]


async def test_two_gateway_processes_share_the_redis_cache(
    fake_cohere: tuple[FakeCohere, str], two_gateways: tuple[str, str]
) -> None:
    fake = fake_cohere[0]
    first, second = two_gateways
    docs = documents(40)
    _, headers, a = await post(first, body(docs))
    assert headers["X-Cache"] == "miss"
    _, headers, b = await post(second, body(docs))
    assert headers["X-Cache"] == "hit"
    assert ranking(a) == ranking(b) == expected_ranking(docs)
    _, headers, _ = await post(second, body(docs[:30] + documents(10, start=40)))
    assert headers["X-Cache"] == "partial"
    _, headers, _ = await post(first, body(documents(10, start=40)))
    assert headers["X-Cache"] == "hit"
    assert [len(c["documents"]) for c in fake.calls] == [40, 10]


async def test_savings_of_long_documents_count_their_chunks(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    # 60 documents of ~1,200 tokens (4,800 chars at 0.25 tokens/char): 3 chunks of 500
    # tokens each, so 180 chunks = 2 search units, as the governor would estimate them.
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))
    long_docs = [f"doc {i} " + "word " * 960 for i in range(60)]
    await post(url, body(long_docs))
    status, headers, _ = await post(url, body(long_docs))
    assert status == 200 and headers["X-Cache"] == "hit"
    labels = {"model": "rerank-v3.5", "team": "search"}
    assert await metric(url, "rerank_cache_saved_search_units_total", labels) == 2


# -- hiding other teams' hits (cache.hide_cross_team_hits, teams.<t>.hide_cross_team_hits)


def upstream_ms(headers: dict[str, str]) -> float:
    timing = dict(part.strip().split(";dur=") for part in headers["Server-Timing"].split(","))
    return float(timing["upstream"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_team_that_hides_cross_team_hits_sees_a_miss_it_could_not_tell_apart(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    cache_prefix: str,
    backend: str,
) -> None:
    fake, upstream = fake_cohere
    sections = redis_cache(cache_prefix, backend=backend)
    sections["cache"]["hide_cross_team_hits"] = True
    url = start_gateway(gateway_config({"cohere-a": upstream}, **sections))
    docs = documents(12)
    _, mine, first = await post(url, body(docs), key=TEAM_KEY)
    assert mine["X-Cache"] == "miss" and len(fake.calls) == 1
    # Team ads asks what team search asked: answered from the cache (no second call),
    # but nothing in the answer says so.
    status, theirs, answer = await post(url, body(docs), key=OTHER_TEAM_KEY)
    assert status == 200 and len(fake.calls) == 1
    assert theirs["X-Cache"] == "miss"
    assert answer["meta"]["billed_units"] == first["meta"]["billed_units"] == {"search_units": 1}
    assert theirs["X-Rerank-Deployment"] == mine["X-Rerank-Deployment"]
    assert upstream_ms(theirs) > 0
    assert answer["meta"].keys() == first["meta"].keys()
    assert ranking(answer) == ranking(first) == expected_ranking(docs)
    # What its own traffic taught it, it is told.
    _, again, answer = await post(url, body(docs), key=OTHER_TEAM_KEY)
    assert again["X-Cache"] == "hit" and answer["meta"]["billed_units"] == {"search_units": 0}
    assert len(fake.calls) == 1


async def test_a_hidden_cross_team_hit_of_a_token_billed_model_reports_tokens_as_a_call_does(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    data = gateway_config({"cohere-a": upstream}, cache={"hide_cross_team_hits": True})
    data["models"]["rerank-v5.0-pro"] = {
        "deployments": [{"provider": "cohere-a", "model": "rerank-v5.0-pro"}]
    }
    url = start_gateway(data)
    payload = {**body(documents(4)), "model": "rerank-v5.0-pro"}
    _, _, first = await post(url, payload, key=TEAM_KEY)
    _, headers, answer = await post(url, payload, key=OTHER_TEAM_KEY)
    assert headers["X-Cache"] == "miss" and len(fake.calls) == 1
    # A call's answer carries the upstream's token count: a replay carries the estimate.
    assert first["meta"]["tokens"]["input_tokens"] > 0
    assert answer["meta"]["tokens"]["input_tokens"] > 0
    assert answer["meta"].keys() == first["meta"].keys()
    assert answer["meta"]["billed_units"].keys() == first["meta"]["billed_units"].keys()


async def test_a_hidden_cross_team_hit_is_rate_limited_like_the_call_it_stands_for(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    data = gateway_config({"cohere-a": upstream}, cache={"hide_cross_team_hits": True})
    data["teams"]["ads"]["rate_limit"] = {"requests_per_minute": 1}
    url = start_gateway(data)
    await post(url, body(documents(3)), key=TEAM_KEY)
    await post(url, body(documents(3, start=3)), key=TEAM_KEY)
    assert (await post(url, body(documents(3)), key=OTHER_TEAM_KEY))[0] == 200
    # A hit would not count against the limit; a call does, and so does its stand-in.
    status, headers, _ = await post(url, body(documents(3, start=3)), key=OTHER_TEAM_KEY)
    assert status == 429 and "Retry-After" in headers
    assert len(fake.calls) == 2


async def test_a_team_can_keep_seeing_shared_hits_when_the_default_hides_them(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    _, upstream = fake_cohere
    data = gateway_config({"cohere-a": upstream}, cache={"hide_cross_team_hits": True})
    data["teams"]["ads"]["hide_cross_team_hits"] = False
    url = start_gateway(data)
    await post(url, body(documents(4)), key=TEAM_KEY)
    _, headers, answer = await post(url, body(documents(4)), key=OTHER_TEAM_KEY)
    assert headers["X-Cache"] == "hit" and answer["meta"]["billed_units"] == {"search_units": 0}
