"""A strict loopback fake of Hugging Face text-embeddings-inference's `POST /rerank`.

Like TEI: the documents must be in `texts` (a body with `documents` lacks `texts` and
gets 422), more than `max_client_batch_size` texts (32, TEI's default) get TEI's 422
"batch size N > maximum allowed batch size M", empty `texts` get 400, a configured
key is required as a Bearer token, errors are `{"error", "error_type"}`, the answer is
a bare array of `{index, score}` sorted best first, and usage comes only as the
`x-compute-tokens` header. Stricter than TEI (whose serde ignores unknown fields): any
field TEI does not define is refused with 422, so the provider is seen to send none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.strict import (
    StrictFake,
    json_response,
    ranked,
    strings,
    token_count,
    unknown_fields,
)

FIELDS = {"query", "texts", "truncate", "truncation_direction", "raw_scores", "return_text"}
# TEI's StatusCode for each error type, and the type a fault status stands for.
ERROR_TYPES = {503: "unhealthy", 424: "backend", 429: "overloaded", 422: "validation", 400: "empty"}


@dataclass
class FakeTei(StrictFake):
    paths: tuple[str, ...] = ("/rerank",)
    max_client_batch_size: int = 32
    batch_sizes: list[int] = field(default_factory=list)  # texts per accepted request
    poison: str | None = None  # a request with a text containing this gets 503 unhealthy

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        error_type = ERROR_TYPES.get(status, "backend" if status >= 500 else "validation")
        return json_response({"error": message, "error_type": error_type}, status, headers)

    def unauthorized(self) -> web.Response:
        return json_response({"error": "Unauthorized", "error_type": "unauthorized"}, 401)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, FIELDS)
        if extra:
            return self.error(422, f"unknown field `{extra[0]}`")
        if "texts" not in body:
            return self.error(422, "missing field `texts`")
        if not isinstance(body.get("query"), str):
            return self.error(422, "missing field `query`")
        if not strings(body["texts"]):
            return self.error(422, "invalid type: `texts` must be a sequence of strings")
        if not body["texts"]:
            return self.error(400, "`texts` cannot be empty")
        if self.poison is not None and any(self.poison in t for t in body["texts"]):
            return self.error(503, "model is not healthy")
        size = len(body["texts"])
        if size > self.max_client_batch_size:
            return self.error(
                422,
                f"batch size {size} > maximum allowed batch size {self.max_client_batch_size}",
            )
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        texts = body["texts"]
        self.batch_sizes.append(len(texts))
        tokens = token_count(body["query"], *texts)
        results = [{"index": i, "score": s} for i, s in ranked(body["query"], texts)]
        return json_response(results, headers={"x-compute-tokens": str(tokens)})
