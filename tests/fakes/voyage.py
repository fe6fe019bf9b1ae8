"""A strict loopback fake of Voyage AI's `POST /v1/rerank`.

Like Voyage: a Bearer key is required; the result count is `top_k`, and `top_n` gets
400 "Argument 'top_n' is not supported by our API" (any other unknown argument too);
an empty string among the documents gets 400 "Input cannot contain empty strings or
empty lists"; more than 1,000 documents get 400; errors are `{"detail"}`. The answer
is `{"object": "list", "data": [{index, relevance_score}], "model", "usage":
{"total_tokens"}}`, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
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

VOYAGE_KEY = "pa-test-key"
FIELDS = {"query", "documents", "model", "top_k", "return_documents", "truncation"}
MODELS = ("rerank-2.5", "rerank-2.5-lite", "rerank-2", "rerank-2-lite")
MAX_DOCUMENTS = 1000


@dataclass
class FakeVoyage(StrictFake):
    api_key: str | None = VOYAGE_KEY
    paths: tuple[str, ...] = ("/v1/rerank",)

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response({"detail": message}, status, headers)

    def unauthorized(self) -> web.Response:
        return self.error(401, "Provided API key is invalid.")

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, FIELDS)
        if extra:
            return self.error(400, f"Argument '{extra[0]}' is not supported by our API")
        if body.get("model") not in MODELS:
            return self.error(400, f"Model {body.get('model')} is not supported")
        docs = body.get("documents")
        if not isinstance(body.get("query"), str) or not strings(docs):
            return self.error(400, "query must be a string and documents a list of strings")
        if not docs or any(d == "" for d in docs) or body["query"] == "":
            return self.error(400, "Input cannot contain empty strings or empty lists")
        if len(docs) > MAX_DOCUMENTS:
            return self.error(400, f"The number of documents must be at most {MAX_DOCUMENTS}")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body["documents"]
        scored = ranked(body["query"], docs)
        if body.get("top_k"):
            scored = scored[: body["top_k"]]
        data = [
            {
                "index": i,
                "relevance_score": s,
                **({"document": docs[i]} if body.get("return_documents") else {}),
            }
            for i, s in scored
        ]
        tokens = token_count(body["query"], *docs)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"total_tokens": tokens},
            }
        )
