"""A strict loopback fake of Infinity's `POST /rerank` (michaelfeil/infinity).

Like Infinity: pydantic validation failures are FastAPI's 422 `{"detail": [{"loc",
"msg", "type"}]}` (missing `query`/`documents`, 0 or more than
`max_client_batch_size` documents (2048 by default), `top_n` not > 0), a model that
is not deployed gets 400 `{"error": {"message", "type", "param", "code"}}`, a configured
key is required as a Bearer token, and `return_documents` echoes each document as a
plain string. Usage is `usage{prompt_tokens, total_tokens}`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, strings, token_count

SERVED_MODEL = "mixedbread-ai/mxbai-rerank-xsmall-v1"


def detail(status: int, loc: str, msg: str, kind: str = "value_error") -> web.Response:
    return json_response({"detail": [{"loc": ["body", loc], "msg": msg, "type": kind}]}, status)


@dataclass
class FakeInfinity(StrictFake):
    paths: tuple[str, ...] = ("/rerank",)
    served_model: str = SERVED_MODEL
    max_client_batch_size: int = 2048

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "InternalServerError" if status >= 500 else "BadRequestError",
                "param": None,
                "code": status,
            }
        }
        return json_response(body, status, headers)

    def unauthorized(self) -> web.Response:
        return json_response({"detail": "Not authenticated"}, 401)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        for name in ("query", "documents"):
            if name not in body:
                return detail(422, name, "Field required", "missing")
        if not isinstance(body["query"], str):
            return detail(422, "query", "Input should be a valid string", "string_type")
        docs = body["documents"]
        if not strings(docs):
            return detail(422, "documents", "Input should be a valid list of strings", "list_type")
        if not 1 <= len(docs) <= self.max_client_batch_size:
            return detail(
                422,
                "documents",
                f"List should have at least 1 item and at most {self.max_client_batch_size} items",
                "too_long" if docs else "too_short",
            )
        top_n = body.get("top_n")
        if top_n is not None and (type(top_n) is not int or top_n <= 0):
            return detail(422, "top_n", "Input should be greater than 0", "greater_than")
        model = body.get("model", "default/not-specified")
        if model not in (self.served_model, "default/not-specified"):
            return self.error(
                400, f"Model {model} not deployed. Deployed models: {self.served_model}"
            )
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body["documents"]
        scored = ranked(body["query"], docs)
        if body.get("top_n"):
            scored = scored[: body["top_n"]]
        tokens = token_count(body["query"], *docs)
        results = []
        for i, s in scored:
            item: dict[str, Any] = {"relevance_score": s, "index": i}
            if body.get("return_documents"):
                item["document"] = docs[i]
            results.append(item)
        return json_response(
            {
                "object": "rerank",
                "id": f"infinity-{uuid.uuid4()}",
                "created": int(time.time()),
                "model": self.served_model,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
