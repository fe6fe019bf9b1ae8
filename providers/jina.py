"""Jina AI's hosted rerank API (`POST https://api.jina.ai/v1/rerank`), Cohere's shape.

A Bearer key is required. `return_documents: false` is sent so the answer carries
scores only; usage is `usage.total_tokens`. Jina's v3 reranker is listwise (a
document's score depends on the others), so calls are never split by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.http import UpstreamOptions, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall


@dataclass
class JinaOptions(UpstreamOptions):
    api_key: str
    base_url: str = "https://api.jina.ai"
    path: str = "/v1/rerank"
    max_batch_size: Annotated[int, Ge(1)] | None = None
    type: Literal["jina"] = "jina"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)
        if not self.api_key:
            raise ValueError("api_key must not be empty: Jina refuses calls without a key")


class JinaProvider(RerankHttpProvider):
    """The `jina` provider type."""

    type = "jina"

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {
            "model": call.model,
            "query": call.query,
            "documents": list(documents),
            "return_documents": False,
        }
