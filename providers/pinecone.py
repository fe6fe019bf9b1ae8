"""Pinecone Inference rerank: `POST https://api.pinecone.io/rerank`.

Headers `Api-Key` and `X-Pinecone-Api-Version` (always sent: what the service does
without one is UNVERIFIED). Documents go as objects `{"text": ...}` (the SDKs wrap
strings the same way; bare strings are UNVERIFIED), `return_documents: false` keeps the
answer to `{"data": [{index, score}], "usage": {"rerank_units"}}`, scores in 0..1. Each
hosted model caps the documents of a request (bge-reranker-v2-m3 and pinecone-rerank-v0
100, cohere-rerank-3.5 200), so calls are split at the model's cap; the scores are
absolute cross-encoder outputs, so the slices merge as they are. Pinecone bills rerank
units, reported per request; they are passed on as the call's search units and priced
per 1,000 (the figure is UNVERIFIED: set it in `pricing.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.answers import DataScored, align, decode, usage_tokens
from providers.http import HttpResponse, UpstreamOptions, bearer_headers, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import CALIBRATED, UpstreamCall, UpstreamResult

API_VERSION = "2025-10"
# Documents per request by hosted model; others get DEFAULT_CAP.
MODEL_CAPS = {"bge-reranker-v2-m3": 100, "cohere-rerank-3.5": 200, "pinecone-rerank-v0": 100}
DEFAULT_CAP = 100


@dataclass
class PineconeOptions(UpstreamOptions):
    api_key: str
    api_version: str = API_VERSION  # X-Pinecone-Api-Version
    base_url: str = "https://api.pinecone.io"
    path: str = "/rerank"
    truncate: Literal["END", "NONE"] | None = None  # `parameters.truncate`, for models that take it
    max_batch_size: Annotated[int, Ge(1)] | None = None  # None: the model's own cap
    type: Literal["pinecone"] = "pinecone"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        if not self.api_key:
            raise ValueError("api_key must not be empty: Pinecone refuses calls without a key")


class PineconeProvider(RerankHttpProvider):
    """The `pinecone` provider type."""

    type = "pinecone"
    score_scale = CALIBRATED  # "normalized between 0 and 1"
    options: PineconeOptions

    def __init__(self, name: str, options: PineconeOptions) -> None:
        super().__init__(name, options)
        self.headers = bearer_headers(None) | {
            "Api-Key": options.api_key,
            "X-Pinecone-Api-Version": options.api_version,
        }

    def batch_size(self, call: UpstreamCall) -> int | None:
        return self.options.max_batch_size or MODEL_CAPS.get(call.model, DEFAULT_CAP)

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "query": call.query,
            "documents": [{"text": doc} for doc in documents],
            "return_documents": False,
        }
        if self.options.truncate is not None:
            body["parameters"] = {"truncate": self.options.truncate}
        return body

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, DataScored)
        return UpstreamResult(
            scores=align(self.name, ((r.index, r.score) for r in answer.data), count, resp),
            search_units=usage_tokens(answer.usage, "rerank_units"),
            upstream_request_id=resp.request_id or resp.headers.get("x-pinecone-request-id"),
        )
