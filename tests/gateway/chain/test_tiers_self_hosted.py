"""A tiered alias with pro on Cohere and fast on a self-hosted TEI cross-encoder, end to
end: tier choice by latency budget, downgrade to the TEI tier when the team's budget is
spent (self-hosted calls cost nothing), and `local-bm25` as the last fallback when TEI
is down. Also the "Fully offline" config of docs/providers.md, against the fakes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from gateway.config import parse_config
from tests.conftest import teams_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.fakes.tei import FakeTei
from tests.support.clouds import expected_order
from tests.support.paths import ROOT
from tests.support.selfhosted import BGE, MANY_DOCS, QUERY, cohere_and_tei, post_sync
from tests.support.servers import ServerLoop

DOCS = MANY_DOCS[:40]
DOC_FILE = ROOT / "docs" / "providers.md"


def tiered(cohere_url: str, tei_url: str, **team: Any) -> dict[str, Any]:
    data = teams_config(*cohere_and_tei(cohere_url, tei_url, offline=True))
    data["teams"]["search"].update(team)
    data["cache"] = {"backend": "none"}  # every request reaches the tiers and the budget
    return data


def fakes(servers: ServerLoop) -> tuple[FakeCohere, str, FakeTei, str]:
    cohere, tei = FakeCohere(), FakeTei()
    return cohere, servers.serve(cohere.app()), tei, servers.serve(tei.app())


BODY = {"model": "rerank-auto", "query": QUERY, "documents": DOCS, "top_n": 5}


def test_pro_on_cohere_fast_on_tei_by_latency_budget(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    cohere, cohere_url, tei, tei_url = fakes(servers)
    # Pro answers in 50 ms or more, so its first call cannot teach its latency model that
    # it fits 100 ms: a call of a few ms, blended with the 400 ms prior, could bring the
    # prediction under 100 ms, and the choice then turned on the machine's speed.
    cohere.faults = Faults(delay_s=0.05)
    gateway = start_gateway(tiered(cohere_url, tei_url))
    pro = post_sync(gateway, BODY)
    assert pro.status_code == 200, pro.text
    assert pro.headers["x-rerank-model"] == "rerank-v4.0-pro"
    assert pro.headers["x-rerank-deployment"] == "cohere/rerank-v4.0-pro"
    assert cohere.calls[-1]["documents"] == DOCS and tei.calls == []
    fast = post_sync(gateway, BODY, **{"X-Latency-Budget-Ms": "100"})  # pro's 400 ms cannot fit
    assert fast.status_code == 200, fast.text
    assert fast.headers["x-rerank-model"] == "bge-m3"
    assert fast.headers["x-rerank-deployment"] == f"tei/{BGE}"
    assert sorted(tei.batch_sizes) == [8, 32]  # 40 documents in TEI-sized sub-batches
    order = expected_order(QUERY, DOCS)[:5]
    assert [r["index"] for r in fast.json()["results"]] == order
    assert [r["index"] for r in pro.json()["results"]] == order  # both fakes score alike


def test_budget_downgrade_lands_on_the_tei_tier(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    cohere, cohere_url, tei, tei_url = fakes(servers)
    budget = {"usd_per_day": 0.0025, "on_exhausted": "downgrade"}  # one Cohere search unit
    gateway = start_gateway(tiered(cohere_url, tei_url, budget=budget))
    first = post_sync(gateway, BODY)
    assert (first.status_code, first.headers["x-rerank-model"]) == (200, "rerank-v4.0-pro")
    second = post_sync(gateway, BODY)
    assert second.status_code == 200, second.text
    assert second.headers["x-rerank-model"] == "bge-m3"
    assert second.headers["x-rerank-deployment"] == f"tei/{BGE}"
    assert "served by the fast tier 'bge-m3'" in second.json()["meta"]["warnings"][0]
    assert len(cohere.calls) == 1 and len(tei.calls) == 2
    # The self-hosted tier is free by default, so the spent budget does not stop it.
    third = post_sync(gateway, BODY)
    assert (third.status_code, third.headers["x-rerank-model"]) == (200, "bge-m3")


def test_local_bm25_answers_when_tei_is_down(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    _, cohere_url, tei, tei_url = fakes(servers)
    tei.faults = Faults(status=503)
    gateway = start_gateway(tiered(cohere_url, tei_url))
    resp = post_sync(gateway, BODY, **{"X-Latency-Budget-Ms": "100"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-rerank-deployment"] == "fallback/local"
    assert len(resp.json()["results"]) == 5


def offline_example() -> dict[str, Any]:
    """The config block marked `<!-- offline-config -->` in docs/providers.md."""
    text = DOC_FILE.read_text()
    match = re.search(r"<!-- offline-config -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/providers.md lost its offline config example"
    return yaml.safe_load(match.group(1))


def test_the_documented_offline_config_works_against_the_fakes(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    data = offline_example()
    assert {p["type"] for p in data["providers"].values()} == {"tei", "local"}
    assert parse_config(data, {"ADMIN_KEY_SHA256": "0" * 64})  # valid as written
    tei = FakeTei()
    data["providers"]["tei"]["base_url"] = servers.serve(tei.app())
    data["auth"] = {"mode": "keys", "admin_key_sha256": "0" * 64}
    data["teams"] = teams_config({}, {})["teams"]
    gateway = start_gateway(data)
    body = {"model": "bge-reranker-v2-m3", "query": QUERY, "documents": MANY_DOCS, "top_n": 3}
    resp = post_sync(gateway, body)
    assert resp.status_code == 200, resp.text
    assert [r["index"] for r in resp.json()["results"]] == expected_order(QUERY, MANY_DOCS)[:3]
    assert sorted(tei.batch_sizes) == [4, 32, 32, 32]
    tei.faults = Faults(status=503)
    down = post_sync(gateway, {**body, "query": QUERY + " today"})
    assert (down.status_code, down.headers["x-rerank-deployment"]) == (200, "fallback/local")
    bm25 = post_sync(gateway, {**body, "model": "local-bm25"})
    assert bm25.status_code == 200


def test_the_documented_tier_snippet_extends_the_offline_config() -> None:
    text = DOC_FILE.read_text()
    match = re.search(r"<!-- offline-tiers -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/providers.md lost its tiered example"
    extra = yaml.safe_load(match.group(1))
    data = offline_example()
    for section, entries in extra.items():
        data[section].update(entries)
    config = parse_config(data, {"ADMIN_KEY_SHA256": "0" * 64, "COHERE_API_KEY": "k"})
    assert config.models["rerank-auto"].tiers == {
        "pro": "rerank-v5.0-pro",
        "fast": "bge-reranker-v2-m3",
    }
