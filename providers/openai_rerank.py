"""Hosted rerank APIs in the "OpenAI-style" family (DeepInfra, Together, Fireworks, which
host Qwen3-Reranker among others), in the two shapes they come in:

- `shape: cohere` (Together, and Fireworks by all accounts): `POST /v1/rerank` with
  `{model, query, documents}` in, sorted `results[{index, relevance_score}]` and a
  `usage` block out, as Cohere and Jina do;
- `shape: pairwise` (DeepInfra's `POST /v1/inference/{model}`): parallel `queries[]` and
  `documents[]` in (the query repeated once per document: the lists must be of one
  length, a third-party finding, UNVERIFIED, hence `repeat_query`), `scores[]` out in
  input order, with `input_tokens`.

A Bearer key is required. Billed per token; no price is built in (set it in
`pricing.models`, else `pricing.default_usd_per_million_tokens`). llama.cpp's server
speaks the `cohere` shape too; it has its own type (`llamacpp`, providers/llamacpp.py)
for its optional key, raw scores and errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from annotated_types import Ge

from providers.answers import decode
from providers.http import HttpResponse, UpstreamOptions, check_endpoint, count_or_none, malformed
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall, UpstreamResult

PATHS = {"cohere": "/v1/rerank", "pairwise": "/v1/inference/{model}"}


@dataclass
class OpenAIRerankOptions(UpstreamOptions):
    base_url: str  # e.g. https://api.together.xyz, https://api.deepinfra.com
    api_key: str
    shape: Literal["cohere", "pairwise"] = "cohere"
    path: str = ""  # empty: the shape's (PATHS); `{model}` is replaced by the model id
    repeat_query: bool = True  # pairwise: send the query once per document
    max_batch_size: Annotated[int, Ge(1)] | None = None  # None: never split
    type: Literal["openai_rerank"] = "openai_rerank"  # the config's `type` key

    def __post_init__(self) -> None:
        self.path = self.path or PATHS[self.shape]
        check_endpoint(self.base_url, self.path)
        if not self.api_key:
            raise ValueError("api_key must not be empty: these hosts refuse calls without one")


class _Pairwise(msgspec.Struct):
    scores: list[float]
    input_tokens: Any = None


class OpenAIRerankProvider(RerankHttpProvider):
    """The `openai_rerank` provider type."""

    type = "openai_rerank"
    score_scale = None  # the hosted model's own (Qwen3-Reranker: 0..1): set it per deployment
    options: OpenAIRerankOptions

    def __init__(self, name: str, options: OpenAIRerankOptions) -> None:
        super().__init__(name, options)
        self.pairwise = options.shape == "pairwise"

    def url_for(self, call: UpstreamCall) -> str:
        # A model id such as Qwen/Qwen3-Reranker-0.6B keeps its slash in DeepInfra's path.
        return self.url.replace("{model}", quote(call.model, safe="/"))

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        if not self.pairwise:
            return {"model": call.model, "query": call.query, "documents": list(documents)}
        queries = [call.query] * len(documents) if self.options.repeat_query else [call.query]
        return {"queries": queries, "documents": list(documents)}

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        if not self.pairwise:
            return super().parse(resp, count)  # Cohere's shape
        answer = decode(self.name, resp, _Pairwise)
        if len(answer.scores) != count:
            what = f"{len(answer.scores)} scores for {count} documents"
            raise malformed(self.name, what, resp)
        return UpstreamResult(
            scores=answer.scores,
            tokens=count_or_none(answer.input_tokens),
            upstream_request_id=resp.request_id,
        )
