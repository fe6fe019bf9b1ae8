"""NVIDIA NIM text reranking (NeMo Retriever): `POST /v1/ranking`.

The body nests the text: `query: {text}`, `passages: [{text}]`, plus `truncate`
(`END` cuts over-long passages, `NONE` refuses them). The answer is
`rankings: [{index, logit}]` with raw, unbounded logits and no usage. With
`score: sigmoid` (the default) logits are mapped into 0..1 so they read like Cohere's
relevance scores; `score: logit` passes them on as they are. Either way the numbers
come from that model's own scale: never compare them across models or tiers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge

from providers.answers import NimShaped, align, decode
from providers.http import HttpResponse, UpstreamOptions, check_endpoint
from providers.rerank_http import RerankHttpProvider
from providers.types import UpstreamCall, UpstreamResult


@dataclass
class NimOptions(UpstreamOptions):
    base_url: str
    api_key: str | None = None  # none for a self-hosted NIM; `nvapi-...` for NVIDIA's hosted one
    path: str = "/v1/ranking"
    score: Literal["sigmoid", "logit"] = "sigmoid"
    truncate: Literal["END", "NONE"] = "END"
    max_batch_size: Annotated[int, Ge(1)] = 512  # NIM's passages per request
    type: Literal["nim"] = "nim"  # the config's `type` key: selects this options class

    def __post_init__(self) -> None:
        check_endpoint(self.base_url, self.path)


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class NimProvider(RerankHttpProvider):
    """The `nim` provider type."""

    type = "nim"

    def __init__(self, name: str, options: NimOptions) -> None:
        super().__init__(name, options)
        self.truncate = options.truncate
        self.squash = options.score == "sigmoid"

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {
            "model": call.model,
            "query": {"text": call.query},
            "passages": [{"text": doc} for doc in documents],
            "truncate": self.truncate,
        }

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, NimShaped)
        if self.squash:
            pairs = ((r.index, sigmoid(r.logit)) for r in answer.rankings)
        else:
            pairs = ((r.index, r.logit) for r in answer.rankings)
        return UpstreamResult(
            scores=align(self.name, pairs, count, resp), upstream_request_id=resp.request_id
        )
