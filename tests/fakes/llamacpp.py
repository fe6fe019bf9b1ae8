"""A loopback fake of llama.cpp's `llama-server --reranking`, as its source reads.

Routes `/rerank`, `/reranking`, `/v1/rerank`, `/v1/reranking`. A key only with
`api_key` set (then `Authorization: Bearer <key>`, else 401 `authentication_error`).
Lenient like the server: unknown fields are ignored, but `query` must be a string
(400) and `documents` (or TEI's `texts`) a non-empty array of strings (objects read as
empty: 400). `reranking=False` answers 501 `not_supported_error`, `loading=True` 503
`unavailable_error`; a (query, document) pair over `n_ubatch` tokens fails the whole
request with 500 "input (N tokens) is too large to process". Scores are raw logits
(the log-odds of the Cohere fake's score), the answer Jina's shape
`{"model", "object": "list", "usage", "results": [{index, relevance_score}]}` best first
(TEI's bare array for a `texts` body). Errors `{"error": {code, message, type}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.nim import logit_of
from tests.fakes.strict import StrictFake, json_response, ranked, strings, token_count

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


@dataclass
class FakeLlamaCpp(StrictFake):
    paths: tuple[str, ...] = ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking")
    reranking: bool = True
    loading: bool = False
    n_ubatch: int = 512

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = TYPES.get(status, "server_error")
        return json_response(
            {"error": {"code": status, "message": message, "type": kind}}, status, headers
        )

    def unauthorized(self) -> web.Response:
        return self.error(401, "Invalid API Key")

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        if self.loading:
            return self.error(503, "Loading model")
        if not self.reranking:
            return self.error(
                501, "This server does not support reranking. Start it with `--reranking`"
            )
        if "query" not in body:
            return self.error(400, '"query" must be provided')
        if not isinstance(body["query"], str):
            return self.error(400, '"query" must be a string')
        docs = body.get("documents", body.get("texts"))
        if not strings(docs) or not docs:
            return self.error(400, '"documents" must be a non-empty string array')
        for doc in docs:
            tokens = token_count(body["query"], doc) + 3  # BOS/SEP/EOS around the pair
            if tokens > self.n_ubatch:
                return self.error(
                    500,
                    f"input ({tokens} tokens) is too large to process. increase the physical "
                    f"batch size (current batch size: {self.n_ubatch})",
                )
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body.get("documents", body.get("texts"))
        scored = [(i, logit_of(s)) for i, s in ranked(body["query"], docs)]
        top_n = body.get("top_n", len(docs))
        scored = scored[:top_n] if isinstance(top_n, int) else scored
        if "texts" in body and "documents" not in body:
            return json_response([{"index": i, "score": s} for i, s in scored])
        tokens = token_count(body["query"], *docs)
        return json_response(
            {
                "model": body.get("model", "bge-reranker-v2-m3-Q8_0.gguf"),
                "object": "list",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": [{"index": i, "relevance_score": s} for i, s in scored],
            }
        )
