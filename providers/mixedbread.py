"""Mixedbread's hosted rerank API: `POST https://api.mixedbread.com/v1/reranking`.

Its own names: documents go in `input`, the result count is `top_k` (not sent: every
score is wanted), echoes are `return_input` (sent false). The answer is
`{"data": [{index, score, object}], "usage": {"total_tokens"}}`, best first; scores have
been 0..1 in every example (the scale is UNVERIFIED). At most 1,000 inputs per request,
so larger calls are split (the mxbai rerankers are pointwise cross-encoders). Billed per
token (the price is UNVERIFIED: set it in `pricing.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Interval

from providers.answers import DataScored, align, decode, usage_tokens
from providers.http import HttpResponse, UpstreamOptions, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall, UpstreamResult


@dataclass
class MixedbreadOptions(UpstreamOptions):
    api_key: str
    base_url: str = "https://api.mixedbread.com"
    path: str = "/v1/reranking"
    max_batch_size: Annotated[int, Interval(ge=1, le=1000)] = 1000
    type: Literal["mixedbread"] = "mixedbread"  # the config's `type` key

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        if not self.api_key:
            raise ValueError("api_key must not be empty: Mixedbread refuses calls without a key")


class MixedbreadProvider(RerankHttpProvider):
    """The `mixedbread` provider type."""

    type = "mixedbread"
    score_scale = None  # 0..1 in every example, but no source says what they mean

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {
            "model": call.model,
            "query": call.query,
            "input": list(documents),
            "return_input": False,
        }

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, DataScored)
        return UpstreamResult(
            scores=align(self.name, ((r.index, r.score) for r in answer.data), count, resp),
            tokens=usage_tokens(answer.usage, "total_tokens", "prompt_tokens"),
            upstream_request_id=resp.request_id,
        )
