"""Parsing of Cohere v1/v2 bodies and rendering of responses (no HTTP)."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import ApiError
from gateway.http.wire import MAX_DEPTH, parse_body, parse_request, render_response
from providers.types import Span, SpanOptions, UpstreamMeta


def parse(body: dict, version: int = 2):
    return parse_request(body, version)


def rejected(body: dict, version: int = 2) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_request(body, version)
    return info.value


def test_explicit_nulls_mean_not_set() -> None:
    req = parse(
        {
            "model": "m",
            "query": "q",
            "documents": ["a"],
            "top_n": None,
            "max_tokens_per_doc": None,
            "priority": None,
            "return_documents": None,
            "rank_fields": None,
            "max_chunks_per_doc": None,
            "relevant_spans": None,
        }
    )
    assert (req.top_n, req.max_tokens_per_doc, req.priority, req.return_documents) == (
        None,
        None,
        None,
        False,
    )


def test_unknown_field_is_cohere_422() -> None:
    err = rejected({"model": "m", "query": "q", "documents": ["a"], "top_k": 3})
    assert err.status == 422
    assert err.message.startswith("unknown field: parameter 'top_k' is not a valid field")


def test_v2_only_fields_are_unknown_on_v1() -> None:
    assert rejected({"query": "q", "documents": ["a"], "max_tokens_per_doc": 5}, 1).status == 422


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"model": "m", "query": "  ", "documents": ["a"]},
            "invalid request: query must not be empty or be only whitespace",
        ),
        (
            {"model": "m", "query": "q", "documents": []},
            "invalid request: list of documents must not be empty",
        ),
        (
            {"query": "q", "documents": ["a"]},
            "invalid request: a model parameter is required for this endpoint.",
        ),
        (
            {"model": "m", "query": "q", "documents": ["a"], "top_n": 0},
            "invalid request: top_n must be at least 1 (got 0)",
        ),
        (
            {"model": "m", "query": "q", "documents": ["a"], "top_n": "3"},
            "invalid request: top_n must be an integer",
        ),
        (
            {"model": "m", "query": "q", "documents": ["a"], "priority": 1000},
            "invalid request: priority must be between 0 and 999 (got 1000)",
        ),
        ({"model": "m", "query": 5, "documents": ["a"]}, "invalid request: query must be a string"),
        (
            {"model": "m", "query": "q", "documents": "a"},
            "invalid request: documents must be a list",
        ),
        (
            {"model": "m", "query": "q", "documents": [{"title": "x"}]},
            "invalid request: documents[0] has no string `text` field; add one or name the fields "
            "to rank on with rank_fields",
        ),
    ],
)
def test_invalid_bodies_are_400_with_cohere_messages(body: dict, message: str) -> None:
    err = rejected(body)
    assert (err.status, err.message) == (400, message)


def test_too_many_chunks_matches_cohere_rule() -> None:
    err = rejected({"query": "q", "documents": ["a"] * 5000, "max_chunks_per_doc": 2}, 1)
    assert err.status == 400
    assert "number of total max chunks" in err.message


def test_v1_object_documents_with_rank_fields() -> None:
    docs = [{"title": "Paris", "text": "capital", "id": 7}, {"text": "other"}]
    req = parse(
        {
            "query": "q",
            "documents": docs,
            "rank_fields": ["title", "text"],
            "return_documents": True,
        },
        1,
    )
    assert req.texts == ["title: Paris\ntext: capital", "text: other"]
    assert req.documents == docs and req.return_documents


def test_legacy_v2_fields_from_old_sdks_are_accepted() -> None:
    req = parse(
        {
            "model": "m",
            "query": "q",
            "documents": [{"text": "a"}],
            "return_documents": True,
            "max_chunks_per_doc": 1,
        }
    )
    assert req.texts == ["a"] and req.return_documents


def spans_body(spans: object) -> dict:
    return {"model": "m", "query": "q", "documents": ["a"], "relevant_spans": spans}


def test_relevant_spans_are_read_as_the_sdk_sends_them() -> None:
    assert parse(spans_body({"mode": "enabled"})).relevant_spans == SpanOptions()
    enabled = parse(spans_body({"mode": "enabled", "threshold": 0.3, "max_spans": 2}))
    assert enabled.relevant_spans == SpanOptions(0.3, 2)
    nulls = parse(spans_body({"mode": "enabled", "threshold": None, "max_spans": None}))
    assert nulls.relevant_spans == SpanOptions()
    # disabled (or absent) is not asking for spans
    assert parse(spans_body({"mode": "disabled", "threshold": 0.5})).relevant_spans is None


@pytest.mark.parametrize(
    ("spans", "status", "says"),
    [
        ("enabled", 400, "relevant_spans must be an object"),
        ({}, 400, "relevant_spans.mode must be"),
        ({"mode": "on"}, 400, "relevant_spans.mode must be"),
        ({"mode": "enabled", "threshold": 1.5}, 400, "threshold must be a number between 0"),
        ({"mode": "enabled", "threshold": True}, 400, "threshold must be a number"),
        ({"mode": "enabled", "max_spans": 0}, 400, "relevant_spans.max_spans must be at least 1"),
        ({"mode": "enabled", "max_spans": "3"}, 400, "relevant_spans.max_spans must be an int"),
        ({"mode": "enabled", "top": 3}, 422, "'relevant_spans.top' is not a valid field"),
    ],
)
def test_invalid_relevant_spans_are_refused_naming_the_field(
    spans: object, status: int, says: str
) -> None:
    err = rejected(spans_body(spans))
    assert err.status == status and says in err.message


def test_relevant_spans_are_a_v2_field() -> None:
    body = {"query": "q", "documents": ["a"], "relevant_spans": {"mode": "enabled"}}
    assert rejected(body, 1).status == 422


def test_render_adds_each_results_spans_and_omits_none() -> None:
    req = parse({"model": "m", "query": "q", "documents": ["a", "b"]})
    spans = [(), (Span(0, 4, 0.8), Span(9, 12, 0.2))]
    out = orjson.loads(render_response(req, "rid", [0.1, 0.9], 1, spans=spans))
    assert out["results"] == [
        {
            "index": 1,
            "relevance_score": 0.9,
            "relevant_spans": [
                {"start": 0, "end": 4, "score": 0.8},
                {"start": 9, "end": 12, "score": 0.2},
            ],
        },
        {"index": 0, "relevance_score": 0.1},
    ]


def test_render_passes_on_what_the_upstream_said_in_meta() -> None:
    req = parse({"model": "m", "query": "q", "documents": ["a"]})
    upstream = UpstreamMeta(is_deprecated=True, is_experimental=False, input_tokens=12)
    out = orjson.loads(render_response(req, "rid", [0.5], 1, ["ours"], upstream=upstream))
    assert out["meta"] == {
        "api_version": {"version": "2", "is_deprecated": True, "is_experimental": False},
        "billed_units": {"search_units": 1},
        "tokens": {"input_tokens": 12},
        "warnings": ["ours"],
    }


def test_body_must_be_json_object() -> None:
    with pytest.raises(ApiError) as info:
        parse_body(b"[1,2]", 2)
    assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        parse_body(b"{oops", 2)
    assert info.value.status == 400 and "not valid JSON" in info.value.message


def test_render_sorts_by_score_breaks_ties_by_index_and_applies_top_n() -> None:
    req = parse({"model": "m", "query": "q", "documents": ["a", "b", "c", "d"], "top_n": 3})
    out = orjson.loads(render_response(req, "rid", [0.2, 0.9, 0.5, 0.9], 1, ["w"]))
    assert [r["index"] for r in out["results"]] == [1, 3, 2]
    assert out["meta"] == {
        "api_version": {"version": "2"},
        "billed_units": {"search_units": 1},
        "warnings": ["w"],
    }
    assert "document" not in out["results"][0]


def test_render_returns_documents_in_v1_shape() -> None:
    req = parse(
        {"query": "q", "documents": ["a", {"text": "b", "id": "x"}], "return_documents": True}, 1
    )
    out = orjson.loads(render_response(req, "rid", [0.1, 0.7], 1))
    assert out["results"] == [
        {"index": 1, "relevance_score": 0.7, "document": {"text": "b", "id": "x"}},
        {"index": 0, "relevance_score": 0.1, "document": {"text": "a"}},
    ]
    assert out["meta"]["api_version"] == {"version": "1"}


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep (written out: orjson itself refuses past 254)."""
    return '{"text": "d", "x": ' * (depth - 1) + '{"text": "deep"}' + "}" * (depth - 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("documents", "[" + nested(300) + "]"),  # the audit's case, with return_documents
        ("documents", '[{"text": "a", "meta": ' + "[" * 40 + "]" * 40 + "}]"),
        ("relevant_spans", nested(40)),  # any field that takes an object
    ],
)
def test_deep_nesting_anywhere_is_refused_at_parse_time(field: str, value: str) -> None:
    """Was: 300 levels with return_documents parsed, went upstream, was billed, and the
    answer then failed to encode (500)."""
    raw = (
        '{"model": "m", "query": "q", "return_documents": true, '
        + ('"documents": ["a"], ' if field != "documents" else "")
        + f'"{field}": {value}}}'
    ).encode()
    with pytest.raises(ApiError) as info:
        parse_body(raw, 2)
    assert info.value.status == 400
    assert f"more than {MAX_DEPTH} levels deep" in info.value.message


def test_nesting_up_to_the_limit_is_accepted_and_echoed() -> None:
    doc = nested(MAX_DEPTH - 2)  # the body (1) and the documents list (2) come first
    raw = ('{"model": "m", "query": "q", "return_documents": true, "documents": [' + doc + "]}")
    parsed = parse_body(raw.encode(), 2)
    answer = orjson.loads(render_response(parsed, "id", [0.5], 1))
    assert answer["results"][0]["document"] == orjson.loads(doc)
