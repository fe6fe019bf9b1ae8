"""Over-fetch limits as a plain policy: precedence, reject messages, truncation."""

from __future__ import annotations

import pytest

from gateway.config import LimitsConfig
from policies.money.limits import LimitExceeded, LimitPolicy, RequestLimits


def policy(
    base: RequestLimits | None = None,
    models: dict[str, RequestLimits] | None = None,
    teams: dict[str, RequestLimits] | None = None,
) -> LimitPolicy:
    return LimitPolicy(base or LimitsConfig(), models or {}, teams or {}, 0.25, 16 * 1024 * 1024)


def test_global_default_is_100_documents_rejected() -> None:
    p = policy()
    assert p.enforce("search", "m", "q", ["d"] * 100).kept == 100
    with pytest.raises(LimitExceeded) as exc:
        p.enforce("search", "m", "q", ["d"] * 101)
    assert exc.value.limit == "max_documents"
    assert exc.value.message == (
        "too many documents: team 'search' sent 101 documents for model 'm' and its limit is "
        "max_documents=100; send only the best 100 of your first-stage results"
    )


def test_team_overrides_model_overrides_global() -> None:
    p = policy(
        LimitsConfig(max_documents=50),
        models={"big": RequestLimits(max_documents=200), "small": RequestLimits(max_documents=10)},
        teams={"vip": RequestLimits(max_documents=300, overfetch="truncate")},
    )
    assert p.effective("other", "plain").max_documents == 50
    assert p.effective("other", "big").max_documents == 200
    assert p.effective("other", "small").max_documents == 10
    assert p.effective("vip", "small").max_documents == 300
    assert p.effective("vip", "small").overfetch == "truncate"
    assert p.effective("other", "small").overfetch == "reject"


def test_truncate_keeps_the_first_documents_with_a_warning() -> None:
    p = policy(teams={"search": RequestLimits(max_documents=3, overfetch="truncate")})
    texts = ["a", "b", "c", "d", "e"]
    result = p.enforce("search", "m", "q", texts)
    assert result.texts == ["a", "b", "c"] and result.kept == 3
    assert result.warnings == [
        "team 'search' sent 5 documents and its limit is max_documents=3: only the first 3 were "
        "reranked; documents 3-4 were dropped and have no results"
    ]
    assert [(a.limit, a.action) for a in result.applied] == [("max_documents", "truncate")]
    assert texts == ["a", "b", "c", "d", "e"]  # the caller's list is not changed


def test_query_over_its_limit_is_rejected() -> None:
    p = policy(teams={"search": RequestLimits(max_query_chars=10)})
    p.enforce("search", "m", "q" * 10, ["d"])
    with pytest.raises(LimitExceeded) as exc:
        p.enforce("search", "m", "q" * 11, ["d"])
    assert exc.value.limit == "max_query_chars"
    assert "team 'search' sent a query of 11 characters" in exc.value.message
    assert "max_query_chars=10" in exc.value.message


def test_long_documents_rejected_naming_the_first_and_counting_all() -> None:
    p = policy(models={"m": RequestLimits(max_document_chars=5)})
    with pytest.raises(LimitExceeded) as exc:
        p.enforce("search", "m", "q", ["ok", "toolong", "fine", "also too long"])
    assert exc.value.limit == "max_document_chars"
    assert exc.value.message == (
        "document too long: documents[1] has 7 characters and the limit for team 'search' is "
        "max_document_chars=5; 2 document(s) are over it (indices 1, 3); shorten or split them"
    )


def test_long_documents_truncated() -> None:
    p = policy(teams={"search": RequestLimits(max_document_chars=5, long_documents="truncate")})
    result = p.enforce("search", "m", "q", ["ok", "toolong", "fine"])
    assert result.texts == ["ok", "toolo", "fine"] and result.kept == 3
    assert (
        "1 document(s) were over the limit for team 'search' (max_document_chars=5)"
        in (result.warnings[0])
    )


def test_token_limit_is_approximated_from_characters() -> None:
    # 10 tokens at 0.25 tokens per character = 40 characters; the smaller limit holds.
    p = policy(teams={"t": RequestLimits(max_document_tokens=10, max_document_chars=100)})
    limits = p.effective("t", "m")
    assert limits.max_document_chars == 40
    with pytest.raises(LimitExceeded) as exc:
        p.enforce("t", "m", "q", ["x" * 41])
    assert "max_document_tokens=10 (about 40 characters)" in exc.value.message


def test_count_truncation_happens_before_length_checks() -> None:
    p = policy(
        teams={"t": RequestLimits(max_documents=2, overfetch="truncate", max_document_chars=3)}
    )
    # The third document is too long but dropped by the count limit first: no rejection.
    result = p.enforce("t", "m", "q", ["abc", "def", "far too long"])
    assert result.texts == ["abc", "def"]


def test_body_limit_per_team_never_above_the_server_limit() -> None:
    p = LimitPolicy(
        LimitsConfig(max_body_bytes=8192),
        {},
        {"small": RequestLimits(max_body_bytes=2048), "huge": RequestLimits(max_body_bytes=10**9)},
        0.25,
        65536,
    )
    assert p.body_limit("small") == 2048
    assert p.body_limit("other") == 8192
    assert p.body_limit("huge") == 65536
    assert policy().body_limit("x") == 16 * 1024 * 1024
