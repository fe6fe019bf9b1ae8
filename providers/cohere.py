"""Cohere's rerank API, and any endpoint that speaks it (private deployments, proxies).

Sends clean v2 bodies (`model`, `query`, `documents`, optional `max_tokens_per_doc`)
with a Bearer key and maps Cohere's answer and errors onto the provider contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from annotated_types import Ge

from providers.http import (
    HttpProvider,
    HttpResponse,
    check_endpoint,
    load_json,
    scores_from_ranks,
    status_error,
)
from providers.types import UpstreamCall, UpstreamResult


@dataclass
class CohereOptions:
    base_url: str = "https://api.cohere.com"
    api_key: str | None = None
    timeout_s: Annotated[float, Ge(0.001)] = 30.0
    path: str = "/v2/rerank"
    max_connections: Annotated[int, Ge(1)] = 1024
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
        return self.parse(resp, len(call.documents))

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        payload = load_json(self.name, resp)
        results = payload.get("results") if isinstance(payload, dict) else None
        scores = scores_from_ranks(self.name, results, count, resp=resp)
        return UpstreamResult(
            scores=scores,
            search_units=_billed(payload, "search_units"),
            tokens=_billed(payload, "input_tokens"),
            upstream_request_id=resp.request_id or _str_or_none(payload.get("id")),
        )


def _billed(payload: dict[str, Any], name: str) -> int | None:
    """`meta.billed_units.<name>`: `search_units` (v3.5/v4) or `input_tokens` (token-billed
    models such as Rerank 5), when the upstream states it."""
    meta = payload.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    units = billed.get(name) if isinstance(billed, dict) else None
    if isinstance(units, (int, float)) and not isinstance(units, bool) and units >= 0:
        return int(units)
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
