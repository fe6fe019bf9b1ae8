"""The offline BM25 ranker."""

from __future__ import annotations

from providers.local import LocalOptions, LocalProvider, bm25_scores
from providers.types import UpstreamCall

DOCS = [
    "The weather in Lisbon is sunny in summer.",
    "Paris is the capital and most populous city of France.",
    "Bananas are rich in potassium.",
    "France borders Spain, Belgium and Germany.",
]


def test_relevant_document_outranks_irrelevant_ones() -> None:
    scores = bm25_scores("what is the capital of France", DOCS)
    assert max(range(len(DOCS)), key=scores.__getitem__) == 1
    assert scores[1] > scores[3] > scores[2]
    assert scores[2] == 0.0


def test_scores_are_in_unit_interval_and_deterministic() -> None:
    a = bm25_scores("capital france city", DOCS)
    assert a == bm25_scores("capital france city", DOCS)
    assert all(0.0 <= s <= 1.0 for s in a)


def test_query_without_words_scores_zero() -> None:
    assert bm25_scores("?!", DOCS) == [0.0] * len(DOCS)


async def test_large_inputs_score_the_same_off_the_event_loop() -> None:
    provider = LocalProvider("offline", LocalOptions())
    docs = [d * 400 for d in DOCS]  # well above the inline threshold
    result = await provider.rerank(UpstreamCall("local-bm25", "capital of France", docs, 5.0))
    assert result.scores == bm25_scores("capital of France", docs)


async def test_provider_reports_no_billed_units() -> None:
    provider = LocalProvider("offline", LocalOptions())
    result = await provider.rerank(UpstreamCall("local-bm25", "banana potassium", DOCS, 1.0))
    assert result.search_units == 0
    assert result.scores.index(max(result.scores)) == 2
    assert provider.batch_relative
