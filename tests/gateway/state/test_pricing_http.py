"""Cost by the unit each upstream bills, end to end through the HTTP API.

A token-priced model (Rerank 5 on a Cohere fake, a self-hosted vLLM priced for chargeback)
reserves its estimated tokens, settles to what the fake reports (or to the estimate when it
reports nothing), and its usage row, budget and `meta.billed_units` agree to the token.
Flat and free prices; a tiered alias with pro on Cohere v5 and fast on TEI that downgrades
on budget; and the cache keeping v4's and v5's scores apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis as redis_sync

from policies.money.billing import BillingRules
from tests.conftest import (
    ADMIN_KEY,
    REDIS_URL,
    scratch_prefix,
    spend_in_redis,
    teams_config,
)
from tests.fakes.cohere import FakeCohere, Faults, pair_tokens
from tests.fakes.strict import token_count
from tests.fakes.tei import FakeTei
from tests.fakes.vllm import SERVED_MODEL, FakeVllm
from tests.support.clouds import client
from tests.support.selfhosted import MANY_DOCS, QUERY, cohere_and_tei, post_sync
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:30]
BODY = {"model": "rerank-v5.0-pro", "query": QUERY, "documents": DOCS, "top_n": 3}
V5_PRO_USD_PER_M = 0.05  # the default in docs/pricing.md (UNVERIFIED upstream)
ESTIMATE = BillingRules().estimate_tokens(QUERY, DOCS)


@pytest.fixture
def redis_prefix(redis_client: redis_sync.Redis) -> Iterator[str]:
    yield from scratch_prefix(redis_client, "rg-test-")


def micros(tokens: int, usd_per_million: float = V5_PRO_USD_PER_M) -> int:
    return max(1, round(tokens * usd_per_million))


def config(
    providers: dict[str, Any],
    models: dict[str, Any],
    *,
    prefix: str = "",
    budget: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    data = teams_config(providers, models, **{"cache": {"backend": "none"}, **sections})
    if budget is not None:
        data["teams"]["search"]["budget"] = budget
    if prefix:
        data["state"] = {"redis_url": REDIS_URL}
        data["limits"] = {"limits_backend": "redis", "redis_prefix": prefix}
    return data


def cohere(url: str) -> dict[str, Any]:
    return {"type": "cohere", "base_url": url, "api_key": "upstream-key", "timeout_s": 5}


def v5(url: str, **sections: Any) -> dict[str, Any]:
    models = {
        "rerank-v5.0-pro": {"deployments": [{"provider": "cohere"}]},
        "rerank-v4.0-pro": {"deployments": [{"provider": "cohere"}]},
    }
    return config({"cohere": cohere(url)}, models, **sections)


def usage_rows(url: str, team: str = "search") -> dict[tuple[str, str | None], dict[str, Any]]:
    resp = httpx.get(
        f"{url}/admin/usage?team={team}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return {(r["model"], r["deployment"]): r for r in resp.json()["rows"]}


def spent(client: redis_sync.Redis, prefix: str) -> int:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    return spend_in_redis(client, prefix, "search", day) or 0


def held_call(fake: FakeCohere, url: str, body: dict[str, Any]) -> tuple[Callable[[], Any], Any]:
    """Send `body`, hold it at the fake; returns (release -> response, fake's held event)."""
    hold = threading.Event()
    fake.faults = Faults(hold=hold, times=1)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(post_sync, url, body)
    assert fake.faults.arrived.wait(10), "the call never reached the fake"

    def release() -> Any:
        hold.set()
        try:
            return future.result(15)
        finally:
            pool.shutdown()

    return release, fake


def test_token_priced_model_reserves_the_estimate_and_settles_to_the_reported_tokens(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    redis_client: redis_sync.Redis,
    redis_prefix: str,
) -> None:
    fake = FakeCohere()
    url = start_gateway(
        v5(servers.serve(fake.app()), prefix=redis_prefix, budget={"usd_per_day": 1.0})
    )
    release, _ = held_call(fake, url, BODY)
    assert spent(redis_client, redis_prefix) == micros(ESTIMATE)  # reserved before the call
    resp = release()
    assert resp.status_code == 200, resp.text
    reported = pair_tokens(QUERY, DOCS)
    assert reported != ESTIMATE  # the fake's tokenizer is not the estimator
    assert resp.json()["meta"]["billed_units"] == {"input_tokens": reported}
    assert spent(redis_client, redis_prefix) == micros(reported)  # settled to the bill
    row = usage_rows(url)["rerank-v5.0-pro", "cohere/rerank-v5.0-pro"]
    assert (row["unit"], row["billed_units"], row["tokens"]) == ("tokens", reported, reported)
    assert row["cost_usd"] == micros(reported) / 1e6
    # The Cohere SDK reads the token bill as it reads its other endpoints' bills.
    res = client(url).rerank(model="rerank-v5.0-pro", query=QUERY, documents=DOCS[:4])
    assert res.meta is not None and res.meta.billed_units is not None
    assert res.meta.billed_units.input_tokens == pair_tokens(QUERY, DOCS[:4])
    assert res.meta.billed_units.search_units is None


def test_without_reported_usage_the_estimate_is_billed(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    redis_client: redis_sync.Redis,
    redis_prefix: str,
) -> None:
    fake = FakeCohere(report_tokens=False)
    url = start_gateway(
        v5(servers.serve(fake.app()), prefix=redis_prefix, budget={"usd_per_day": 1.0})
    )
    resp = post_sync(url, BODY)
    assert resp.status_code == 200, resp.text
    assert resp.json()["meta"]["billed_units"] == {"input_tokens": ESTIMATE}
    assert spent(redis_client, redis_prefix) == micros(ESTIMATE)
    row = usage_rows(url)["rerank-v5.0-pro", "cohere/rerank-v5.0-pro"]
    assert (row["unit"], row["billed_units"]) == ("tokens", ESTIMATE)
    # A search-unit model next to it still bills and reports search units.
    old = post_sync(url, {**BODY, "model": "rerank-v4.0-pro"})
    assert old.json()["meta"]["billed_units"] == {"search_units": 1}
    row = usage_rows(url)["rerank-v4.0-pro", "cohere/rerank-v4.0-pro"]
    assert (row["unit"], row["billed_units"], row["cost_usd"]) == ("search_units", 1, 0.0025)


def test_self_hosted_vllm_priced_per_token_for_chargeback(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeVllm()
    providers = {"vllm": {"type": "vllm", "base_url": servers.serve(fake.app()), "timeout_s": 5}}
    models = {"bge": {"deployments": [{"provider": "vllm", "model": SERVED_MODEL}]}}
    pricing = {"models": {"bge": {"usd_per_million_tokens": 0.01}}}
    url = start_gateway(config(providers, models, pricing=pricing))
    resp = post_sync(url, {**BODY, "model": "bge"})
    assert resp.status_code == 200, resp.text
    reported = token_count(QUERY, *DOCS)  # the fake's usage.prompt_tokens
    assert resp.json()["meta"]["billed_units"] == {"input_tokens": reported}
    row = usage_rows(url)["bge", f"vllm/{SERVED_MODEL}"]
    assert (row["unit"], row["billed_units"], row["tokens"]) == ("tokens", reported, reported)
    assert row["cost_usd"] == micros(reported, 0.01) / 1e6


def test_flat_and_free_prices(servers: ServerLoop, start_gateway: Callable[..., str]) -> None:
    fake = FakeCohere()
    models = {
        "flat": {"deployments": [{"provider": "cohere", "model": "rerank-v3.5"}]},
        "gift": {"deployments": [{"provider": "cohere", "model": "rerank-v3.5"}]},
    }
    pricing = {"models": {"flat": {"usd_per_request": 0.004}, "gift": {"free": True}}}
    url = start_gateway(
        config(
            {"cohere": cohere(servers.serve(fake.app()))},
            models,
            pricing=pricing,
            budget={"usd_per_day": 0.008},  # two flat requests
        )
    )
    answers = [post_sync(url, {**BODY, "model": "flat"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 402]  # budget refusals are 402
    assert answers[0].json()["meta"]["billed_units"] == {"search_units": 1}
    assert "needs about $0.004" in answers[2].json()["message"]
    gift = [post_sync(url, {**BODY, "model": "gift"}) for _ in range(2)]  # past the spent budget
    assert [g.status_code for g in gift] == [200, 200]
    assert gift[0].json()["meta"]["billed_units"] == {"search_units": 0}
    rows = usage_rows(url)
    flat, free = rows["flat", "cohere/rerank-v3.5"], rows["gift", "cohere/rerank-v3.5"]
    assert (flat["unit"], flat["billed_units"], flat["cost_usd"]) == ("request", 2, 0.008)
    assert (free["unit"], free["billed_units"], free["cost_usd"]) == ("free", 0, 0.0)
    assert free["requests"] == 2


def tiered(cohere_url: str, tei_url: str, **sections: Any) -> dict[str, Any]:
    return config(*cohere_and_tei(cohere_url, tei_url, pro="rerank-v5.0-pro"), **sections)


def test_tiered_v5_pro_on_cohere_downgrades_to_tei_on_budget(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake, tei = FakeCohere(), FakeTei()
    reported = pair_tokens(QUERY, DOCS)
    one_pro = micros(max(reported, ESTIMATE)) / 1e6  # room for one pro reservation only
    url = start_gateway(
        tiered(
            servers.serve(fake.app()),
            servers.serve(tei.app()),
            budget={"usd_per_day": one_pro, "on_exhausted": "downgrade"},
        )
    )
    body = {**BODY, "model": "rerank-auto"}
    first = post_sync(url, body)
    assert (first.status_code, first.headers["x-rerank-model"]) == (200, "rerank-v5.0-pro")
    assert first.json()["meta"]["billed_units"] == {"input_tokens": reported}
    second = post_sync(url, body)
    assert second.status_code == 200, second.text
    assert second.headers["x-rerank-deployment"] == "tei/BAAI/bge-reranker-v2-m3"
    assert second.json()["meta"]["billed_units"] == {"search_units": 0}  # self-hosted: free
    assert "served by the fast tier 'bge-m3'" in second.json()["meta"]["warnings"][0]
    rows = usage_rows(url)
    pro, fast = (
        rows["rerank-v5.0-pro", "cohere/rerank-v5.0-pro"],
        rows["bge-m3", "tei/BAAI/bge-reranker-v2-m3"],
    )
    assert (pro["unit"], pro["billed_units"]) == ("tokens", reported)
    assert (fast["unit"], fast["cost_usd"]) == ("free", 0.0)
    # TEI's own token count (x-compute-tokens, summed over its sub-batches) is recorded.
    assert fast["tokens"] == sum(token_count(c["query"], *c["texts"]) for c in tei.calls)
    assert rows["bge-m3", None]["downgraded"] == 1


def test_tei_priced_per_token_is_billed_by_its_reported_tokens_after_a_downgrade(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake, tei = FakeCohere(), FakeTei()
    url = start_gateway(
        tiered(
            servers.serve(fake.app()),
            servers.serve(tei.app()),
            budget={"usd_per_day": 0.000001, "on_exhausted": "downgrade"},  # pro never fits
            pricing={"models": {"bge-m3": {"usd_per_million_tokens": 0.02}}},
        )
    )
    resp = post_sync(url, {**BODY, "model": "rerank-auto"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-model"] == "bge-m3" and fake.calls == []
    reported = sum(token_count(c["query"], *c["texts"]) for c in tei.calls)
    assert resp.json()["meta"]["billed_units"] == {"input_tokens": reported}
    row = usage_rows(url)["bge-m3", "tei/BAAI/bge-reranker-v2-m3"]
    assert (row["unit"], row["billed_units"]) == ("tokens", reported)
    assert row["cost_usd"] == micros(reported, 0.02) / 1e6


def test_v4_and_v5_never_share_cache_entries(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    fake = FakeCohere()
    data = v5(servers.serve(fake.app()))
    data["cache"] = {"backend": "memory"}
    for model in ("rerank-v4.0-pro", "rerank-v5.0-pro"):
        data["models"][model]["cache_family"] = "cohere-pro"  # asked to share: versions differ
    url = start_gateway(data)
    for model in ("rerank-v4.0-pro", "rerank-v5.0-pro", "rerank-v5.0-pro"):
        resp = post_sync(url, {**BODY, "model": model})
        assert resp.status_code == 200, resp.text
    assert [c["model"] for c in fake.calls] == ["rerank-v4.0-pro", "rerank-v5.0-pro"]
    assert resp.headers["x-cache"] == "hit"
    assert resp.json()["meta"]["billed_units"] == {"search_units": 0}  # nothing billed
