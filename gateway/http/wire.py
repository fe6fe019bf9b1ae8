"""Cohere's rerank request and response schemas, v1 and v2, mapped onto one internal type.

JSON `null` means "not set" for every optional field (SDKs send explicit nulls).
`/v2/rerank` also accepts the fields older SDKs sent there (object documents,
`rank_fields`, `return_documents`, `max_chunks_per_doc`); unknown fields get Cohere's 422.
Arrays and objects nest at most MAX_DEPTH levels anywhere in a body: deeper, the answer
(which echoes object documents) could not be encoded, so it is refused at parse time,
before anything is billed or sent upstream.

`relevant_spans` (Rerank 5, v2 only) is read as the `cohere` 7.3 SDK's types describe it:
`{mode: enabled | disabled, threshold?: 0..1, max_spans?: >= 1}`; disabled is not asking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from gateway.errors import ApiError, bad_request
from gateway.http.wire_types import (
    MAX_DOCUMENTS,
    MAX_INT32,
    REQUEST_TYPES,
    BilledUnits,
    ChunksPerDoc,
    Count,
    Meta,
    Priority,
    RelevantSpans,
    Result,
    Tokens,
    bounds,
)
from providers.types import Span, SpanOptions, UpstreamMeta

# Levels of arrays and objects in a body, the body's own object being the first: an object
# document (at level 3) may nest 29 more. orjson encodes at most 254 levels, and an echoed
# document sits one level deeper in the answer than in the request.
MAX_DEPTH = 32
# The fields, modes and bounds of the types in gateway.http.wire_types (written there once).
_FIELDS = {version: frozenset(kind.__annotations__) for version, kind in REQUEST_TYPES.items()}
_SPAN_FIELDS = frozenset(RelevantSpans.__annotations__)
_SPAN_MODES = ("enabled", "disabled")
_COUNT = bounds(Count)
_CHUNKS = bounds(ChunksPerDoc)
_PRIORITY = bounds(Priority)


@dataclass(slots=True)
class RerankRequest:
    """One caller request, whatever the API version."""

    api_version: int
    model: str | None
    query: str
    texts: list[str]  # what is ranked, one per caller document
    documents: list[Any]  # the caller's documents as sent (for return_documents)
    top_n: int | None = None
    max_tokens_per_doc: int | None = None
    return_documents: bool = False
    priority: int | None = None
    relevant_spans: SpanOptions | None = None  # None: not asked for (or mode disabled)
    warnings: list[str] = field(default_factory=list)

    def truncate(self, texts: list[str], kept: int, warnings: list[str]) -> None:
        """Keep the first `kept` documents, ranked by `texts` (over-fetch limits)."""
        self.texts = texts
        self.documents = self.documents[:kept]
        self.warnings.extend(warnings)


def parse_body(raw: bytes, api_version: int) -> RerankRequest:
    if not raw:
        raise bad_request("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON ({exc.msg})") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if _deeper_than(body, MAX_DEPTH):
        raise bad_request(
            f"the body nests arrays and objects more than {MAX_DEPTH} levels deep; "
            "flatten the documents"
        )
    return parse_request(body, api_version)


def _deeper_than(value: dict[str, Any], limit: int) -> bool:
    """True when arrays and objects nest more than `limit` levels (`value` is level 1).
    Iterative, so no depth of input can exhaust the stack; strings are skipped at once."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if type(node) is dict else node
        kinds = set(map(type, children))  # at C speed: a list of strings ends here
        if dict not in kinds and list not in kinds:
            continue
        if depth >= limit:
            return True
        todo.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def parse_request(body: dict[str, Any], api_version: int) -> RerankRequest:
    for key in body:
        if key not in _FIELDS[api_version]:
            raise ApiError(
                422,
                f"unknown field: parameter '{key}' is not a valid field. For proper usage, "
                "please refer to https://docs.cohere.com/reference/rerank",
            )
    model = _optional_str(body, "model")
    if api_version == 2 and model is None:
        raise bad_request("a model parameter is required for this endpoint.")
    query = body.get("query")
    if query is None:
        raise bad_request("query is required")
    if not isinstance(query, str):
        raise bad_request("query must be a string")
    if not query.strip():
        raise bad_request("query must not be empty or be only whitespace")
    raw_docs = body.get("documents")
    if raw_docs is None:
        raise bad_request("documents is required")
    if not isinstance(raw_docs, list):
        raise bad_request("documents must be a list")
    if not raw_docs:
        raise bad_request("list of documents must not be empty")
    rank_fields = _rank_fields(body.get("rank_fields"))
    if rank_fields is None and all(type(d) is str for d in raw_docs):
        texts = raw_docs  # the common case: plain strings, nothing to extract
    else:
        texts = [_document_text(d, i, rank_fields) for i, d in enumerate(raw_docs)]
    chunks = _optional_int(body, "max_chunks_per_doc", _CHUNKS)
    if chunks is not None and len(texts) * chunks >= MAX_DOCUMENTS:
        raise bad_request(
            "number of total max chunks (number of documents * max chunks per doc) "
            f"must be less than {MAX_DOCUMENTS}"
        )
    if len(texts) > MAX_DOCUMENTS:
        raise bad_request(f"too many documents ({len(texts)}); the maximum is {MAX_DOCUMENTS}")
    spans = _relevant_spans(body.get("relevant_spans"))
    return_documents = body.get("return_documents")
    if return_documents is not None and not isinstance(return_documents, bool):
        raise bad_request("return_documents must be true or false")
    return RerankRequest(
        api_version=api_version,
        model=model,
        query=query,
        texts=texts,
        documents=raw_docs,
        top_n=_optional_int(body, "top_n", _COUNT),
        max_tokens_per_doc=_optional_int(body, "max_tokens_per_doc", _COUNT),
        return_documents=bool(return_documents),
        priority=_optional_int(body, "priority", _PRIORITY),
        relevant_spans=spans,
    )


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} must be a non-empty string")
    return value


def _optional_int(body: dict[str, Any], key: str, limits: tuple[int, int]) -> int | None:
    low, high = limits
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is 3; 1e300 is an integer too, and out of range below
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{key} must be an integer")
    if not low <= value <= high:
        # Only the bound that matters is named when the upper one is just int32's.
        bounds = f"at least {low}" if value < low and high == MAX_INT32 else (
            f"between {low} and {high}"
        )
        raise bad_request(f"{key} must be {bounds} (got {_shown(value)})")
    return value


def _shown(value: int) -> str:
    # A 300-digit number is not worth echoing whole.
    text = str(value)
    return text if len(text) <= 20 else f"a {len(text)}-digit number"


def _rank_fields(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("rank_fields must be a list of strings")
    if not value:
        raise bad_request("rank_fields cannot be empty; leave it out to rank on `text`")
    return value


def _document_text(doc: Any, index: int, rank_fields: list[str] | None) -> str:
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, dict):
        raise bad_request(f"documents[{index}] must be a string or an object with a text field")
    if rank_fields is None:
        text = doc.get("text")
        if not isinstance(text, str):
            raise bad_request(
                f"documents[{index}] has no string `text` field; add one or name the fields "
                "to rank on with rank_fields"
            )
        return text
    parts = [f"{key}: {_scalar_text(doc[key], index, key)}" for key in rank_fields if key in doc]
    if not parts:
        raise bad_request(f"documents[{index}] has none of the rank_fields {rank_fields}")
    return "\n".join(parts)


def _scalar_text(value: Any, index: int, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return orjson.dumps(value).decode()
    raise bad_request(f"documents[{index}].{key} must be a string, number or boolean")


def _relevant_spans(value: Any) -> SpanOptions | None:
    """The span options of an enabled `relevant_spans`; None when absent or disabled."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("relevant_spans must be an object {mode, threshold, max_spans}")
    for key in value:
        if key not in _SPAN_FIELDS:
            raise ApiError(
                422,
                f"unknown field: parameter 'relevant_spans.{key}' is not a valid field; "
                "relevant_spans takes mode, threshold and max_spans",
            )
    mode = value.get("mode")
    if mode not in _SPAN_MODES:
        raise bad_request("relevant_spans.mode must be \"enabled\" or \"disabled\"")
    threshold = value.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, (int, float))
        or isinstance(threshold, bool)
        or not 0.0 <= threshold <= 1.0
    ):
        raise bad_request("relevant_spans.threshold must be a number between 0 and 1")
    name = "relevant_spans.max_spans"
    max_spans = _optional_int({name: value.get("max_spans")}, name, _COUNT)
    if mode == "disabled":
        return None
    return SpanOptions(None if threshold is None else float(threshold), max_spans)


def render_response(
    request: RerankRequest,
    response_id: str,
    scores: Sequence[float],
    billed_units: int | Mapping[str, int],
    warnings: Sequence[str] = (),
    *,
    spans: Sequence[tuple[Span, ...]] | None = None,
    upstream: UpstreamMeta | None = None,
    order: Sequence[int] | None = None,
) -> bytes:
    """Cohere's response: results by descending score (ties by index), top_n applied;
    a document's relevant spans when there are any, and what the upstream said in `meta`
    (its api_version flags, its token counts). `order`: that ranking, when the caller has
    it already."""
    if order is None:  # a stable sort keeps equal scores in index order, also reversed
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    if request.top_n is not None:
        order = order[: request.top_n]
    results: list[Result]
    if request.return_documents:
        results = [
            {"index": i, "relevance_score": scores[i], "document": _returned(request.documents[i])}
            for i in order
        ]
    else:
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
    if spans is not None:
        for result in results:
            found = spans[result["index"]]
            if found:  # omitted when the model found none, as Cohere does
                result["relevant_spans"] = [
                    {"start": s.start, "end": s.end, "score": s.score} for s in found
                ]
    meta: Meta = {
        "api_version": {"version": "2" if request.api_version == 2 else "1"},
        "billed_units": (
            {"search_units": billed_units}
            if isinstance(billed_units, int)
            else cast(BilledUnits, dict(billed_units))
        ),
    }
    if upstream is not None:
        _upstream_meta(meta, upstream)
    if warnings:
        meta["warnings"] = list(warnings)
    return orjson.dumps({"id": response_id, "results": results, "meta": meta})


def _upstream_meta(meta: Meta, upstream: UpstreamMeta) -> None:
    if upstream.is_deprecated is not None:
        meta["api_version"]["is_deprecated"] = upstream.is_deprecated
    if upstream.is_experimental is not None:
        meta["api_version"]["is_experimental"] = upstream.is_experimental
    tokens: Tokens = {}
    if upstream.input_tokens is not None:
        tokens["input_tokens"] = upstream.input_tokens
    if upstream.output_tokens is not None:
        tokens["output_tokens"] = upstream.output_tokens
    if tokens:
        meta["tokens"] = tokens


def _returned(doc: Any) -> dict[str, Any]:
    return {"text": doc} if isinstance(doc, str) else doc
