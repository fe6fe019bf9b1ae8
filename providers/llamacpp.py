"""llama.cpp's `llama-server --reranking` (bge, jina and Qwen3-Reranker GGUF models on
CPUs): `POST /v1/rerank`, Cohere/Jina-shaped.

The key is optional (the server's `--api-key`, checked as a Bearer token). The scores are
the rank head's raw output: for bge-style cross-encoders an unbounded logit (whether a
build ever squashes it is UNVERIFIED), so `score: sigmoid` maps them into 0..1 and the
default `score: logit` passes them on. The server has no documents cap, but one
(query, document) pair longer than its physical batch (`-ub`, 512 tokens by default)
fails the whole request with a 500 that no retry can fix: that 500 is not retried and
its message says what to change. A server started without `--reranking` answers 501:
a deployment configured wrong, failed over like an unknown model. Self-hosted: free,
with tokens from `usage.total_tokens`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.http import HttpResponse, UpstreamOptions, check_endpoint, status_error
from providers.nim import sigmoid
from providers.rerank_http import RerankHttpProvider
from providers.types import LOGIT, SIGMOID, ProviderError, UpstreamCall, UpstreamResult

_TOO_LARGE = "too large to process"


@dataclass
class LlamaCppOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None  # llama-server's --api-key
    path: str = "/v1/rerank"  # the server also answers /rerank, /reranking, /v1/reranking
    score: Literal["logit", "sigmoid"] = "logit"
    max_batch_size: Annotated[int, Ge(1)] | None = None  # None: never split
    type: Literal["llamacpp"] = "llamacpp"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)


class LlamaCppProvider(RerankHttpProvider):
    """The `llamacpp` provider type."""

    type = "llamacpp"
    options: LlamaCppOptions

    def __init__(self, name: str, options: LlamaCppOptions) -> None:
        super().__init__(name, options)
        self.squash = options.score == "sigmoid"
        self.score_scale = SIGMOID if self.squash else LOGIT

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {"model": call.model, "query": call.query, "documents": list(documents)}

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        result = super().parse(resp, count)  # Cohere's shape; its scores are logits
        if not self.squash:
            return result
        return dataclasses.replace(result, scores=[sigmoid(s) for s in result.scores])

    def error(self, resp: HttpResponse) -> ProviderError:
        if resp.status == 500 and _TOO_LARGE.encode() in resp.body:
            note = (
                "a document is longer than the server's physical batch: start llama-server "
                "with a larger -ub and -b, or have callers send shorter documents"
            )
            return status_error(self.name, resp, retryable=False, note=note)
        err = status_error(self.name, resp)
        if resp.status == 501:  # started without --reranking: this deployment is wrong
            err.status, err.retryable = 404, False
            err.message += " (start llama-server with --reranking)"
        return err
