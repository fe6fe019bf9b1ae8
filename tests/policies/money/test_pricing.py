"""Pricing by the unit each upstream bills: price kinds, defaults, the token estimate, and
the rule that scores of two model versions never share cache entries."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest
import yaml

from gateway.cli.usage import table
from gateway.config import ConfigError, parse_config
from gateway.state.catalog import Catalog
from gateway.state.score_cache import CacheSettings
from policies.model_version import cohere_version
from policies.money.billing import BillingRules
from policies.money.pricing import (
    FREE,
    REQUEST,
    SEARCH_UNITS,
    TOKENS,
    ModelPrice,
    Price,
    PriceTable,
    PricingConfig,
    Usage,
)
from policies.money.usage import MemoryUsageStore, collect
from providers.cohere import CohereOptions, CohereProvider
from providers.tei import TeiOptions, TeiProvider
from providers.types import Deployment
from providers.voyage import VoyageOptions, VoyageProvider
from tests.support.paths import ROOT


def test_each_kind_bills_its_own_figure() -> None:
    usage = Usage(search_units=3, tokens=1_234, calls=2)
    assert Price(SEARCH_UNITS, 2.0).cost_micros(usage) == 6_000  # 3 x $2 / 1,000
    assert Price(TOKENS, 0.05).cost_micros(usage) == 62  # 1,234 x $0.05 / 1e6 = 61.7 micros
    assert Price(REQUEST, 0.001).cost_micros(usage) == 2_000  # two calls at $0.001
    assert Price(FREE).cost_micros(usage) == 0
    assert Price(TOKENS, 0.02).cost_micros(Usage(tokens=3)) == 1  # a paid call is never free
    assert Price(TOKENS, 0.02).cost_micros(Usage()) == 0
    assert [Price(k, 1.0).billed(usage) for k in (SEARCH_UNITS, TOKENS, REQUEST, FREE)] == [
        3,
        1_234,
        2,
        0,
    ]


def dep(provider: Any, model: str) -> Deployment:
    return Deployment(f"{provider.name}/{model}", provider, model)


def test_price_table_kinds_defaults_and_overrides() -> None:
    cohere = CohereProvider("cohere", CohereOptions())
    tei = TeiProvider("tei", TeiOptions(base_url="http://tei"))
    voyage = VoyageProvider("voyage", VoyageOptions(api_key="k"))
    deployments = {
        "rerank-v5.0-pro": [dep(cohere, "rerank-v5.0-pro")],
        "rerank-v5.0-fast": [dep(cohere, "rerank-v5.0-fast")],
        "rerank-v3.5": [dep(cohere, "rerank-v3.5")],
        "bge": [dep(tei, "BAAI/bge-reranker-v2-m3")],
        "bge-chargeback": [dep(tei, "BAAI/bge-reranker-v2-m3")],
        "voyage": [dep(voyage, "rerank-2.5")],
        "flat": [dep(cohere, "rerank-v3.5")],
        "gift": [dep(cohere, "rerank-v3.5")],
        "mixed": [dep(cohere, "rerank-v5.0-pro"), dep(tei, "rerank-v5.0-pro")],
    }
    config = PricingConfig(
        default_usd_per_million_tokens=0.07,
        models={
            "bge-chargeback": ModelPrice(usd_per_million_tokens=0.01),
            "flat": ModelPrice(usd_per_request=0.004),
            "gift": ModelPrice(free=True),
            "mixed": ModelPrice(usd_per_million_tokens=0.05, providers={"tei": 0.5}),
        },
    )
    table = PriceTable(config, deployments)
    assert table.price("rerank-v5.0-pro", "cohere/rerank-v5.0-pro") == Price(TOKENS, 0.05)
    assert table.price("rerank-v5.0-fast", None) == Price(TOKENS, 0.02)
    assert table.price("rerank-v3.5", None) == Price(SEARCH_UNITS, 2.0)
    assert table.price("bge", "tei/BAAI/bge-reranker-v2-m3") == Price(FREE)  # self-hosted
    assert table.price("bge-chargeback", None) == Price(TOKENS, 0.01)
    assert table.price("voyage", None) == Price(TOKENS, 0.07)  # token-billed hosted API
    assert table.price("flat", None) == Price(REQUEST, 0.004)
    assert table.price("gift", None) == Price(FREE)
    # A per-provider exception is in the entry's own kind.
    assert table.price("mixed", "tei/rerank-v5.0-pro") == Price(TOKENS, 0.5)
    # Before the call the deployment is unknown: the dearest for that usage.
    usage = Usage(search_units=1, tokens=10_000, calls=1)
    assert table.charge("mixed", None, usage) == 5_000
    assert table.charge("mixed", "cohere/rerank-v5.0-pro", usage) == 500
    assert table.usd_per_1k("rerank-v5.0-pro") == 0.0  # not billed by search units


def test_one_price_kind_per_entry() -> None:
    with pytest.raises(ValueError, match="set one price kind"):
        ModelPrice(usd_per_1k_units=2.0, usd_per_million_tokens=0.05)
    data = {
        "providers": {"local": {"type": "local"}},
        "models": {"local-bm25": {"deployments": [{"provider": "local"}]}},
        "pricing": {"models": {"local-bm25": {"usd_per_request": 0.01, "free": True}}},
    }
    with pytest.raises(ConfigError, match=r"pricing\.models\.local-bm25.*set one price kind"):
        parse_config(data, {})


def test_token_estimate_counts_the_query_once_per_document() -> None:
    rules = BillingRules()  # 4 characters per token
    assert rules.estimate_tokens("q" * 40, ["d" * 400, "d" * 8]) == (10 + 100) + (10 + 2)
    assert rules.estimate_tokens("q" * 40, ["d" * 400], max_tokens_per_doc=50) == 10 + 50
    assert BillingRules(tokens_per_char=0.5).estimate_tokens("qq", ["dddd"]) == 1 + 2
    assert rules.estimate_tokens("q", []) == 0


@pytest.mark.parametrize(
    ("upstream", "version"),
    [
        ("rerank-v3.5", "cohere-v3.5"),
        ("cohere.rerank-v3-5:0", "cohere-v3.5"),  # Bedrock
        ("Cohere-rerank-v3.5", "cohere-v3.5"),  # Azure
        ("cohere.rerank.v3-5", "cohere-v3.5"),  # OCI
        ("rerank-v4.0-pro", "cohere-v4.0-pro"),
        ("rerank-v5.0-fast", "cohere-v5.0-fast"),
        ("cohere-rerank-v5-pro", "cohere-v5.0-pro"),
        ("rerank-english-v3.0", "cohere-english-v3.0"),
        ("amazon.rerank-v1:0", None),
        ("BAAI/bge-reranker-v2-m3", None),
        ("rerank-2.5", None),  # Voyage
    ],
)
def test_cohere_versions_across_clouds(upstream: str, version: str | None) -> None:
    assert cohere_version(upstream) == version


def cohere_models(models: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": {
            "cohere": {"type": "cohere", "api_key": "k"},
            "azure": {"type": "azure", "base_url": "https://x.models.ai.azure.com", "api_key": "k"},
        },
        "models": models,
        "auth": {"mode": "none"},
    }


def test_cache_families_carry_the_version_they_serve() -> None:
    data = cohere_models(
        {
            "rerank-v4.0-pro": {
                "cache_family": "cohere-pro",
                "deployments": [{"provider": "cohere"}],
            },
            "rerank-v5.0-pro": {
                "cache_family": "cohere-pro",
                "deployments": [{"provider": "cohere"}],
            },
            "search": {  # a name without a version, on two clouds serving the same one
                "deployments": [
                    {"provider": "cohere", "model": "rerank-v3.5"},
                    {"provider": "azure", "model": "Cohere-rerank-v3.5"},
                ]
            },
        }
    )
    config = parse_config(data, {})
    families = CacheSettings.from_config(config, Catalog(config)).families
    assert families == {
        "rerank-v4.0-pro": "cohere-pro@cohere-v4.0-pro",
        "rerank-v5.0-pro": "cohere-pro@cohere-v5.0-pro",  # one family name, no shared entries
        "search": "search@cohere-v3.5",
    }


def test_a_model_serving_two_versions_is_refused() -> None:
    data = cohere_models(
        {
            "search": {
                "deployments": [
                    {"provider": "cohere", "model": "rerank-v3.5"},
                    {"provider": "azure", "model": "cohere-rerank-v5-pro"},
                ]
            }
        }
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(data, {})
    message = str(raised.value)
    assert "models.search.deployments" in message
    assert "'rerank-v3.5' (cohere-v3.5)" in message
    assert "'cohere-rerank-v5-pro' (cohere-v5.0-pro)" in message


def test_the_documented_rerank_5_tiers_read() -> None:
    text = (ROOT / "docs" / "pricing.md").read_text()
    match = re.search(r"<!-- pricing-tiers -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/pricing.md lost its tiers example"
    data = yaml.safe_load(match.group(1))
    data["auth"] = {"mode": "keys"}
    env = {"COHERE_API_KEY": "k", "SEARCH_KEY_SHA256": "0" * 64}
    config = parse_config(data, env)
    assert config.models["rerank-5"].tiers == {
        "pro": "rerank-v5.0-pro",
        "fast": "rerank-v5.0-fast",
    }
    table = PriceTable(config.pricing, Catalog(config).deployments)
    assert table.price("rerank-v5.0-pro", None) == Price(TOKENS, 0.05)
    assert table.price("rerank-v5.0-fast", None) == Price(TOKENS, 0.02)
    assert table.price("bge-reranker-v2-m3", None) == Price(TOKENS, 0.01)


async def test_usage_report_and_table_state_the_unit() -> None:
    store = MemoryUsageStore()
    day = "2026-11-05"
    await store.add("t", day, "v5", "c/v5", {"requests": 2, "tokens": 900, "billed_tokens": 900})
    await store.add("t", day, "v4", "c/v4", {"requests": 1, "search_units": 1})
    await store.add("t", day, "v4", "c/v4", {"billed_search_units": 1, "cost_micros": 2_500})
    await store.add("t", day, "bge", "tei/bge", {"requests": 3, "billed_free": 3})
    await store.add("t", day, "v5", "", {"rejected_budget": 1})
    first = last = date(2026, 11, 5)
    report = await collect(store, ["t"], first, last)
    rows = {(r["model"], r["deployment"]): r for r in report["rows"]}
    assert (rows["v5", "c/v5"]["unit"], rows["v5", "c/v5"]["billed_units"]) == ("tokens", 900)
    assert (rows["v4", "c/v4"]["unit"], rows["v4", "c/v4"]["billed_units"]) == ("search_units", 1)
    assert (rows["bge", "tei/bge"]["unit"], rows["bge", "tei/bge"]["billed_units"]) == ("free", 0)
    assert (rows["v5", None]["unit"], rows["v5", None]["billed_units"]) == (None, 0)
    lines = {line.split()[1]: line.split() for line in table(report).splitlines()[2:]}
    header = table(report).splitlines()[1].split()
    v5 = dict(zip(header, lines["v5"], strict=True))
    assert (v5["tokens"], v5["billed_in"], v5["billed"]) == ("900", "tokens", "900")


def test_default_price_kinds_of_the_newer_backends() -> None:
    providers = {
        "az": {"type": "azure_semantic", "endpoint": "https://x.example", "api_key": "k"},
        "gcp": {"type": "vertex", "project": "p", "credentials_file": "k.json"},
        "pc": {"type": "pinecone", "api_key": "k"},
        "mxb": {"type": "mixedbread", "api_key": "k"},
        "llama": {"type": "llamacpp", "base_url": "http://llama"},
        "together": {"type": "openai_rerank", "base_url": "https://t.example", "api_key": "k"},
    }
    data = {
        "auth": {"mode": "none"},
        "providers": providers,
        "models": {name: {"deployments": [{"provider": name, "model": "m"}]} for name in providers},
        "pricing": {"default_usd_per_million_tokens": 0.03, "default_usd_per_1k_units": 1.5},
    }
    config = parse_config(data, {})
    table = PriceTable(config.pricing, Catalog(config).deployments)
    assert {name: table.price(name, None) for name in providers} == {
        "az": Price(TOKENS, 0.03),  # billed per token (price UNVERIFIED)
        "gcp": Price(SEARCH_UNITS, 1.00),  # per query of up to 100 records (UNVERIFIED)
        "pc": Price(SEARCH_UNITS, 1.5),  # rerank units (price UNVERIFIED)
        "mxb": Price(TOKENS, 0.03),
        "llama": Price(FREE),  # self-hosted
        "together": Price(TOKENS, 0.03),
    }
