"""Shadow comparison math and the rolling book, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from policies.quality.shadow import (
    FAST_VS_PRO,
    PRO_VS_FAST,
    Agreement,
    GuardSettings,
    ShadowBook,
    compare,
    ndcg_at_k,
    rank_correlation,
    ranking,
    top_k_overlap,
)

PRO = [0.9, 0.8, 0.7, 0.6, 0.5]  # ranks documents 0, 1, 2, 3, 4
FAST = [0.8, 0.9, 0.7, 0.5, 0.6]  # ranks 1, 0, 2, 4, 3: two neighbouring swaps


def test_ranking_is_by_score_with_ties_in_document_order() -> None:
    assert ranking(FAST) == [1, 0, 2, 4, 3]
    assert ranking([0.5, 0.7, 0.5]) == [1, 0, 2]


def test_ndcg_by_hand() -> None:
    """Served top 3 by fast: docs 1, 0, 2, with pro's scores as gains:
    DCG = 0.8/log2(2) + 0.9/log2(3) + 0.7/log2(4) = 0.8 + 0.567836 + 0.35 = 1.717836;
    ideal (pro's own order) = 0.9 + 0.8/log2(3) + 0.35 = 1.754744; NDCG@3 = 0.978967."""
    assert ndcg_at_k(FAST, PRO, 3) == pytest.approx(1.717836 / 1.754744, abs=1e-6)
    assert ndcg_at_k(FAST, PRO, 3) == pytest.approx(0.978967, abs=1e-6)
    assert ndcg_at_k(PRO, PRO, 3) == 1.0
    # k=1: fast's first is doc 1 (gain 0.8), pro's is doc 0 (0.9).
    assert ndcg_at_k(FAST, PRO, 1) == pytest.approx(0.8 / 0.9)


def test_ndcg_of_a_reversed_ranking_and_edge_cases() -> None:
    reversed_ = list(reversed(PRO))  # ranks 4, 3, 2, 1, 0
    ideal = 0.9 + 0.8 / math.log2(3) + 0.7 / 2
    worst = 0.5 + 0.6 / math.log2(3) + 0.7 / 2
    assert ndcg_at_k(reversed_, PRO, 3) == pytest.approx(worst / ideal)
    assert ndcg_at_k(FAST, PRO, 50) == ndcg_at_k(FAST, PRO, 5)  # k beyond n: all documents
    assert ndcg_at_k([0.2, 0.1], [0.0, 0.0], 10) == 1.0  # no gains: nothing to get wrong
    assert ndcg_at_k([0.2, 0.1], [-1.0, 0.5], 1) == 0.0  # negative scores count as 0


def test_overlap_and_rank_correlation_by_hand() -> None:
    assert top_k_overlap(FAST, PRO, 3) == 1.0  # {1, 0, 2} = {0, 1, 2}
    assert top_k_overlap(FAST, PRO, 4) == 0.75  # {1, 0, 2, 4} vs {0, 1, 2, 3}
    assert top_k_overlap([1.0], [1.0], 10) == 1.0
    # Rank differences 1, 1, 0, 1, 1: rho = 1 - 6 * 4 / (5 * 24) = 0.8.
    assert rank_correlation(FAST, PRO) == pytest.approx(0.8)
    assert rank_correlation(list(reversed(PRO)), PRO) == pytest.approx(-1.0)
    assert rank_correlation([0.3], [0.9]) == 1.0


def test_compare_uses_top_n_or_10() -> None:
    assert compare(FAST, PRO, 3) == Agreement(3, pytest.approx(0.978967), 1.0, pytest.approx(0.8))
    assert compare(FAST, PRO, None).k == 10


def agreement(ndcg: float) -> Agreement:
    return Agreement(10, ndcg, 1.0, 1.0)


def test_book_summarises_a_rolling_window_per_alias_team_and_direction() -> None:
    book = ShadowBook({"auto": 4}, {})
    for ndcg in (0.5, 0.9, 0.9, 1.0, 1.0):  # the window keeps the last four
        book.record("auto", "search", FAST_VS_PRO, agreement(ndcg), agreement(ndcg))
    book.record("auto", "ads", PRO_VS_FAST, agreement(0.8), agreement(0.7))
    report = book.report(["auto"])["auto"]["teams"]
    search = report["search"][FAST_VS_PRO]
    assert (search["samples"], search["window"]) == (5, 4)
    assert search["ndcg_mean"] == pytest.approx(0.95)
    assert search["ndcg_p10"] == 0.9  # the lowest of four
    assert report["ads"][PRO_VS_FAST]["ndcg_mean"] == 0.8
    assert report["ads"]["fast_quality"]["ndcg_mean"] == 0.7
    assert "downgrades" not in report["ads"]  # no guard configured


def test_guard_stops_downgrades_with_enough_samples_and_resumes_on_recovery() -> None:
    book = ShadowBook({}, {"auto": GuardSettings(min_ndcg=0.9, min_samples=3)})
    changes = []
    for ndcg in (0.8, 0.8):  # below, but too few samples to act on
        changes.append(book.record("auto", "search", FAST_VS_PRO, agreement(ndcg), agreement(ndcg)))
    assert not book.stops_downgrade("auto", "search")
    changes.append(book.record("auto", "search", FAST_VS_PRO, agreement(0.8), agreement(0.8)))
    assert book.stops_downgrade("auto", "search")
    assert not book.stops_downgrade("auto", "ads")  # per team
    # pro now serves; its samples still measure fast's agreement (the second Agreement).
    for _ in range(6):
        changes.append(book.record("auto", "search", PRO_VS_FAST, agreement(1.0), agreement(1.0)))
    assert not book.stops_downgrade("auto", "search")
    assert [c for c in changes if c is not None] == [True, False]
    assert book.report(["auto"])["auto"]["teams"]["search"]["downgrades"] == "allowed"
