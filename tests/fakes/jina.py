"""A strict loopback fake of Jina AI's `POST /v1/rerank`.

A Bearer key is required; the body is Cohere's (`model`, `query`, `documents`, `top_n`,
`return_documents`); unknown fields and unknown models get 422 `{"detail"}`. Results
carry `document: {"text"}` unless `return_documents` is false. Usage is
`usage.total_tokens`. With `listwise`, jina-reranker-v3 scores as a listwise model does:
each document's score depends on the others in the request (`listwise_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.cohere import fake_score
from tests.fakes.strict import (
    StrictFake,
    json_response,
    ranked,
    strings,
    token_count,
    unknown_fields,
)

JINA_KEY = "jina_test_key"
FIELDS = {"model", "query", "documents", "top_n", "return_documents"}
MODELS = (
    "jina-reranker-v3",
    "jina-reranker-v2-base-multilingual",
    "jina-reranker-m0",
    "jina-colbert-v2",
)


@dataclass
class FakeJina(StrictFake):
    api_key: str | None = JINA_KEY
    paths: tuple[str, ...] = ("/v1/rerank",)
    listwise: bool = False  # jina-reranker-v3's scores depend on the whole list
    fields: frozenset[str] = frozenset(FIELDS)
    models: tuple[str, ...] = MODELS

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response({"detail": message}, status, headers)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, set(self.fields))
        if extra:
            return self.extra_field(extra[0])
        if body.get("model") not in self.models:
            return self.unknown_model(body.get("model"))
        if not isinstance(body.get("query"), str) or not strings(body.get("documents")):
            return self.error(422, "query must be a string and documents a list")
        if not body["documents"]:
            return self.error(422, "documents must not be empty")
        return None

    def extra_field(self, name: str) -> web.Response:
        return self.error(422, f"Extra inputs are not permitted: {name}")

    def unknown_model(self, model: Any) -> web.Response:
        return self.error(422, f"model must be one of {', '.join(self.models)}")

    def answer(self, body: dict[str, Any]) -> web.Response:
        return json_response(self.payload(body))

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = body["documents"]
        scored = ranked(body["query"], docs)
        if self.listwise and body["model"] == "jina-reranker-v3":
            scores = listwise_scores(body["query"], docs)
            scored = sorted(enumerate(scores), key=lambda p: (-p[1], p[0]))
        if body.get("top_n"):
            scored = scored[: body["top_n"]]
        echo = body.get("return_documents", True)
        results = [
            {"index": i, "relevance_score": s, **({"document": {"text": docs[i]}} if echo else {})}
            for i, s in scored
        ]
        tokens = token_count(body["query"], *docs)
        return {"model": body["model"], "usage": {"total_tokens": tokens}, "results": results}


def listwise_scores(query: str, docs: list[str]) -> list[float]:
    """Each document's share of the list's total (pointwise) score: the same document
    scores differently beside different others."""
    pointwise = [fake_score(query, d) for d in docs]
    total = sum(pointwise) or 1.0
    return [round(s / total, 6) for s in pointwise]
