"""Hugging Face text-embeddings-inference (TEI) serving a cross-encoder: `POST /rerank`.

TEI differs from Cohere's shape: documents go in `texts`, there is no `top_n` (we never
send one anyway), the answer is a bare JSON array of `{index, score}`, usage comes only
as the `x-compute-tokens` header, and errors are `{"error", "error_type"}`. It refuses
more than `--max-client-batch-size` texts per request (32 by default), so calls are cut
into sub-batches of `max_batch_size`, sent at once and merged by offset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.http import (
    HttpResponse,
    UpstreamOptions,
    check_endpoint,
    count_or_none,
    error_detail,
    load_json,
    scores_from_ranks,
    status_error,
)
from providers.rerank_http import RerankHttpProvider
from providers.types import ProviderError, UpstreamCall, UpstreamResult

# TEI's error types and whether another try (here or elsewhere) can help.
RETRYABLE_ERROR_TYPES = frozenset({"unhealthy", "overloaded", "backend"})
NOT_RETRYABLE_ERROR_TYPES = frozenset({"validation", "tokenizer", "empty"})
_BATCH_LIMIT = re.compile(r"maximum allowed batch size (\d+)")


@dataclass
class TeiOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None  # TEI's --api-key; sent as a Bearer token
    path: str = "/rerank"
    # TEI's --max-client-batch-size: documents per upstream request.
    max_batch_size: Annotated[int, Ge(1)] = 32
    truncate: bool = False  # ask TEI to cut over-long inputs instead of refusing them
    type: Literal["tei"] = "tei"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)


class TeiProvider(RerankHttpProvider):
    """The `tei` provider type."""

    type = "tei"

    def __init__(self, name: str, options: TeiOptions) -> None:
        super().__init__(name, options)
        self.truncate = options.truncate

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"query": call.query, "texts": list(documents)}
        if self.truncate:
            body["truncate"] = True
        return body

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        scores = scores_from_ranks(
            self.name, load_json(self.name, resp), count, score_key="score", resp=resp
        )
        return UpstreamResult(
            scores=scores,
            tokens=count_or_none(resp.headers.get("x-compute-tokens")),
            upstream_request_id=resp.request_id,
        )

    def error(self, resp: HttpResponse) -> ProviderError:
        error_type, message = error_detail(resp.body)
        if error_type in RETRYABLE_ERROR_TYPES:
            return status_error(self.name, resp, error_type, retryable=True)
        if error_type in NOT_RETRYABLE_ERROR_TYPES:
            limit = _BATCH_LIMIT.search(message or "")
            # Our max_batch_size is above the server's: say what to change.
            note = (
                f"set providers.{self.name}.max_batch_size to at most {limit.group(1)}"
                if limit
                else None
            )
            return status_error(self.name, resp, error_type, retryable=False, note=note)
        return status_error(self.name, resp)
