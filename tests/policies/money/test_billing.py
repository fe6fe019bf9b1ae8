"""Search-unit estimates follow the billing rules; prices turn units into dollars."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.money.billing import BillingRules
from policies.money.pricing import ModelPrice, PriceTable, PricingConfig, cost_micros
from providers.cohere import CohereOptions, CohereProvider
from providers.local import LocalOptions, LocalProvider
from providers.types import Deployment

RULES = BillingRules()  # 500-token chunks, 0.25 tokens per character


def chars_for_tokens(tokens: int) -> str:
    return "x" * (tokens * 4)  # 4 characters = 1 token at 0.25 tokens per character


@pytest.mark.parametrize(("count", "units"), [(0, 0), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_short_documents_bill_100_per_unit(count: int, units: int) -> None:
    assert RULES.estimate("q", ["short document"] * count) == units


@pytest.mark.parametrize(
    ("doc_tokens", "count", "units"),
    [
        (10, 100, 1),  # short documents: 100 per unit
        (10, 250, 3),  # the reference's example: 250 short docs = 3 units
        (480, 100, 1),  # query (10) + document (480) fit one 500-token chunk
        (495, 100, 2),  # 505 tokens with the query: two chunks each
        (1200, 100, 3),  # the reference's example: 1,200 tokens = 3 chunks each = 3 units
        (1200, 34, 2),  # 102 chunks
        (4000, 1, 1),  # one long document: 9 chunks, still one unit
    ],
)
def test_texts_estimate_counts_chunks_of_long_documents(
    doc_tokens: int, count: int, units: int
) -> None:
    query = chars_for_tokens(10)
    docs = [chars_for_tokens(doc_tokens)] * count
    assert RULES.estimate(query, docs) == units


def test_chunks_of_one_document() -> None:
    q = 10  # query tokens: each chunk holds 490 document tokens
    assert RULES.chunks(q, chars_for_tokens(490), None) == 1
    assert RULES.chunks(q, chars_for_tokens(491), None) == 2
    assert RULES.chunks(q, chars_for_tokens(980), None) == 2
    assert RULES.chunks(q, chars_for_tokens(981), None) == 3
    assert RULES.chunks(q, "", None) == 1


def test_long_documents_are_truncated_upstream_before_chunking() -> None:
    doc = chars_for_tokens(20_000)
    # Cohere truncates to max_tokens_per_doc (default 4096) first: 4096 / 490 -> 9 chunks.
    assert RULES.chunks(10, doc, None) == 9
    assert RULES.chunks(10, doc, 980) == 2


def test_a_long_query_leaves_less_room_per_chunk() -> None:
    doc = chars_for_tokens(400)
    assert RULES.chunks(10, doc, None) == 1
    assert RULES.chunks(300, doc, None) == 2  # 200 tokens of room per chunk
    assert RULES.chunks(600, doc, None) == 400  # query fills the chunk: 1 token of room


def test_rules_are_configurable() -> None:
    rules = BillingRules(chunk_tokens=1000, tokens_per_char=0.5)
    query, doc = "q" * 20, "d" * 1980  # 10 + 990 tokens fit one 1000-token chunk
    assert rules.chunks(rules.tokens(len(query)), doc, None) == 1
    assert rules.chunks(rules.tokens(len(query)), doc + "dd", None) == 2
    assert PricingConfig(chunk_tokens=1000, tokens_per_char=0.5).rules() == rules


def test_cost_is_units_times_price_per_thousand() -> None:
    assert cost_micros(1, 2.00) == 2_000  # $0.002
    assert cost_micros(3, 2.50) == 7_500
    assert cost_micros(1000, 2.50) == 2_500_000  # $2.50
    assert cost_micros(0, 2.00) == 0


def dep(provider: str, model: str) -> Deployment:
    return Deployment(f"{provider}/{model}", CohereProvider(provider, CohereOptions()), model)


def test_price_table_order_and_defaults() -> None:
    deployments = {
        "rerank-v3.5": [dep("cohere", "rerank-v3.5"), dep("bedrock", "cohere.rerank-v3-5:0")],
        "rerank-v4.0-pro": [dep("azure", "Cohere-rerank-v4.0-pro")],
        "rerank-v4.0-fast": [dep("cohere", "rerank-v4.0-fast")],
        "custom": [dep("selfhosted", "my-model")],
        "negotiated": [dep("cohere", "rerank-v3.5"), dep("azure", "Cohere-rerank-v3.5")],
        "local-bm25": [
            Deployment("offline/local-bm25", LocalProvider("offline", LocalOptions()), "local-bm25")
        ],
    }
    config = PricingConfig(
        default_usd_per_1k_units=3.0,
        models={"negotiated": ModelPrice(usd_per_1k_units=1.5, providers={"azure": 1.0})},
    )
    table = PriceTable(config, deployments)
    assert table.usd_per_1k("rerank-v3.5", "cohere/rerank-v3.5") == 2.00
    assert table.usd_per_1k("rerank-v3.5", "bedrock/cohere.rerank-v3-5:0") == 2.00
    assert table.usd_per_1k("rerank-v4.0-pro", "azure/Cohere-rerank-v4.0-pro") == 2.50
    assert table.usd_per_1k("rerank-v4.0-fast") == 2.00
    assert table.usd_per_1k("custom", "selfhosted/my-model") == 3.0  # the configured default
    assert table.usd_per_1k("negotiated", "cohere/rerank-v3.5") == 1.5
    assert table.usd_per_1k("negotiated", "azure/Cohere-rerank-v3.5") == 1.0
    assert table.usd_per_1k("local-bm25", "offline/local-bm25") == 0.0
    # Before the call the deployment is unknown: reserve at the dearest one.
    assert table.cost_micros("negotiated", None, 2) == cost_micros(2, 1.5)
    assert table.cost_micros("negotiated", "azure/Cohere-rerank-v3.5", 2) == 2_000


@settings(max_examples=300, deadline=None)
@given(
    chunk_tokens=st.sampled_from([50, 500, 512]),
    tokens_per_char=st.sampled_from([0.25, 0.3, 1.0]),
    query_chars=st.integers(0, 3000),
    doc_chars=st.lists(st.integers(0, 5000), max_size=120),
    max_tokens=st.sampled_from([None, 1, 10, 300, 5000]),
)
def test_the_one_pass_estimates_equal_the_per_document_rules(
    chunk_tokens: int,
    tokens_per_char: float,
    query_chars: int,
    doc_chars: list[int],
    max_tokens: int | None,
) -> None:
    # estimate() skips the per-document loop when the longest document fits one chunk;
    # estimate_tokens() maps in C. Both must equal the rules applied one document at a time.
    rules = BillingRules(chunk_tokens=chunk_tokens, tokens_per_char=tokens_per_char)
    query, docs = "q" * query_chars, ["d" * n for n in doc_chars]
    query_tokens = rules.tokens(query_chars)
    chunks = sum(rules.chunks(query_tokens, doc, max_tokens) for doc in docs)
    assert rules.estimate(query, docs, max_tokens) == -(-chunks // 100)
    tokens = sum(query_tokens + min(rules.tokens(len(d)), max_tokens or 10**9) for d in docs)
    assert rules.estimate_tokens(query, docs, max_tokens) == tokens
