"""Voyage AI's hosted rerank API (`POST https://api.voyageai.com/v1/rerank`).

Voyage names the result count `top_k` and refuses `top_n` with 400; we send neither
(every score is wanted). Results come back in `data`, usage as `usage.total_tokens`.
Voyage refuses empty strings ("Input cannot contain empty strings"), while Cohere's API
takes them: an empty document is not sent and scores 0.0, as it has nothing to match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Interval

from providers.answers import VoyageShaped, align, decode, usage_tokens
from providers.http import HttpResponse, UpstreamOptions, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall, UpstreamResult


@dataclass
class VoyageOptions(UpstreamOptions):
    api_key: str
    base_url: str = "https://api.voyageai.com"
    path: str = "/v1/rerank"
    truncation: bool = True  # False: Voyage refuses over-long inputs instead of cutting them
    max_batch_size: Annotated[int, Interval(ge=1, le=1000)] = 1000
    type: Literal["voyage"] = "voyage"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        if not self.api_key:
            raise ValueError("api_key must not be empty: Voyage refuses calls without a key")


class VoyageProvider(RerankHttpProvider):
    """The `voyage` provider type."""

    type = "voyage"

    skips_empty = True  # "Input cannot contain empty strings"

    def __init__(self, name: str, options: VoyageOptions) -> None:
        super().__init__(name, options)
        self.truncation = options.truncation

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {
            "model": call.model,
            "query": call.query,
            "documents": list(documents),
            "return_documents": False,
            "truncation": self.truncation,
        }

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, VoyageShaped)
        pairs = ((r.index, r.relevance_score) for r in answer.data)
        return UpstreamResult(
            scores=align(self.name, pairs, count, resp),
            tokens=usage_tokens(answer.usage, "total_tokens"),
            upstream_request_id=resp.request_id,
        )
