"""Cohere's rerank API, and any endpoint that speaks it (private deployments, proxies).

Sends clean v2 bodies (`model`, `query`, `documents`, and when the caller set them
`max_tokens_per_doc`, `priority`, `relevant_spans`) with a Bearer key, and maps Cohere's
answer and errors onto the provider contract: the scores, each result's relevant spans
(Rerank 5), and what `meta` says beside them (billed units, `api_version` flags,
`tokens`, `warnings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from providers.http import (
    HttpProvider,
    HttpResponse,
    UpstreamOptions,
    check_endpoint,
    count_or_none,
    load_json,
    malformed,
    scores_from_ranks,
    status_error,
)
from providers.types import Span, UpstreamCall, UpstreamMeta, UpstreamResult

# An upstream's warnings reach the caller's `meta.warnings`: a few, of bounded length.
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 1000


@dataclass
class CohereOptions(UpstreamOptions):
    base_url: str = "https://api.cohere.com"
    api_key: str | None = None
    path: str = "/v2/rerank"
    # Send the caller's `priority` (Cohere's API takes 0-999); off for a compatible
    # endpoint that refuses the field.
    forward_priority: bool = True
    type: Literal["cohere"] = "cohere"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)


class CohereProvider(HttpProvider):
    """The `cohere` provider type: Cohere's v2 rerank protocol over HTTP."""

    type = "cohere"
    options: CohereOptions

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "query": call.query,
            "documents": list(call.documents),
        }
        if call.max_tokens_per_doc is not None:
            body["max_tokens_per_doc"] = call.max_tokens_per_doc
        if call.priority is not None and self.options.forward_priority:
            body["priority"] = call.priority
        spans = call.relevant_spans
        if spans is not None:
            options: dict[str, Any] = {"mode": "enabled"}
            if spans.threshold is not None:
                options["threshold"] = spans.threshold
            if spans.max_spans is not None:
                options["max_spans"] = spans.max_spans
            body["relevant_spans"] = options
        return body

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        timeout = min(self.options.timeout_s, call.timeout_s)
        headers = self.headers
        if call.request_id:
            headers = {**headers, "X-Request-Id": call.request_id}
        resp = await self.transport.post(
            self.url, orjson.dumps(self.body(call)), headers, timeout, call.trace_headers
        )
        if resp.status >= 400:
            raise status_error(self.name, resp)
        return self.parse(resp, len(call.documents), spans=call.relevant_spans is not None)

    def parse(self, resp: HttpResponse, count: int, *, spans: bool = False) -> UpstreamResult:
        payload = load_json(self.name, resp)
        results = payload.get("results") if isinstance(payload, dict) else None
        scores = scores_from_ranks(self.name, results, count, resp=resp)
        return UpstreamResult(
            scores=scores,
            search_units=_billed(payload, "search_units"),
            tokens=_billed(payload, "input_tokens"),
            upstream_request_id=resp.request_id or _str_or_none(payload.get("id")),
            spans=self._spans(results, count, resp) if spans and results else None,
            meta=_meta(payload.get("meta")),
        )

    def _spans(self, results: list[Any], count: int, resp: HttpResponse) -> list[tuple[Span, ...]]:
        """Each document's relevant spans, in the upstream's order (most relevant first);
        none for a document whose result has no `relevant_spans`."""
        found: list[tuple[Span, ...]] = [()] * count
        for result in results:  # already checked by scores_from_ranks: dicts, valid indexes
            raw = result.get("relevant_spans")
            if raw is None:
                continue
            if not isinstance(raw, list):
                raise malformed(self.name, "relevant_spans that are not a list", resp)
            found[result["index"]] = tuple(_span(self.name, item, resp) for item in raw)
        return found


def _billed(payload: dict[str, Any], name: str) -> int | None:
    """`meta.billed_units.<name>`: `search_units` (v3.5/v4) or `input_tokens` (token-billed
    models such as Rerank 5), when the upstream states it."""
    meta = payload.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    units = billed.get(name) if isinstance(billed, dict) else None
    if isinstance(units, (int, float)) and not isinstance(units, bool) and units >= 0:
        return int(units)
    return None


def _span(label: str, item: Any, resp: HttpResponse) -> Span:
    start = item.get("start") if isinstance(item, dict) else None
    end = item.get("end") if isinstance(item, dict) else None
    score = item.get("score") if isinstance(item, dict) else None
    if (
        type(start) is not int
        or type(end) is not int
        or not 0 <= start <= end
        or not isinstance(score, (int, float))
        or isinstance(score, bool)
    ):
        raise malformed(label, "a relevant span that is not {start, end, score}", resp)
    return Span(start, end, float(score))


def _meta(meta: Any) -> UpstreamMeta | None:
    """The parts of Cohere's `meta` passed on to the caller; None when there are none."""
    if not isinstance(meta, dict):
        return None
    version = meta.get("api_version")
    version = version if isinstance(version, dict) else {}
    tokens = meta.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    warnings = meta.get("warnings")
    found = UpstreamMeta(
        is_deprecated=_bool_or_none(version.get("is_deprecated")),
        is_experimental=_bool_or_none(version.get("is_experimental")),
        warnings=tuple(
            w[:MAX_WARNING_CHARS] for w in warnings[:MAX_WARNINGS] if isinstance(w, str)
        )
        if isinstance(warnings, list)
        else (),
        input_tokens=count_or_none(tokens.get("input_tokens")),
        output_tokens=count_or_none(tokens.get("output_tokens")),
    )
    return None if found == _NO_META else found


_NO_META = UpstreamMeta()


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
