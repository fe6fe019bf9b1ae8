"""A strict loopback fake of Pinecone Inference's `POST /rerank`.

Like Pinecone as its SDKs describe it: `Api-Key` required (401 `UNAUTHENTICATED`), an
`X-Pinecone-Api-Version` the service knows (what it does without one is UNVERIFIED; the
fake refuses); documents are objects (bare strings refused: UNVERIFIED); per-model
document caps (bge-reranker-v2-m3 100, cohere-rerank-3.5 200, pinecone-rerank-v0 100);
one rank field for bge-reranker-v2-m3 and pinecone-rerank-v0; `parameters.truncate`
`END` or `NONE`; unknown top-level fields refused (UNVERIFIED). The answer is
`{"model", "data": [{index, score, document?}], "usage": {"rerank_units": 1}}` best
first; errors `{"error": {code, message}, "status"}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, strings, unknown_fields

PINECONE_KEY = "pcsk_test_key"
VERSIONS = ("2025-04", "2025-10", "2026-04", "2026-07")
CAPS = {"bge-reranker-v2-m3": 100, "cohere-rerank-3.5": 200, "pinecone-rerank-v0": 100}
ONE_FIELD = ("bge-reranker-v2-m3", "pinecone-rerank-v0")
FIELDS = {"model", "query", "documents", "top_n", "return_documents", "rank_fields", "parameters"}
CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
}


@dataclass
class FakePinecone(StrictFake):
    api_key: str | None = PINECONE_KEY
    paths: tuple[str, ...] = ("/rerank",)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Api-Key") == self.api_key

    def unauthorized(self) -> web.Response:
        return self.error(401, "Invalid API Key")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        version = request.headers.get("X-Pinecone-Api-Version")
        if version not in VERSIONS:
            return self.error(400, f"Unsupported API version: {version!r}")
        return await super().handle(request)

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        code = CODES.get(status, "UNKNOWN")
        return json_response(
            {"error": {"code": code, "message": message}, "status": status}, status, headers
        )

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, FIELDS)
        if extra:
            return self.error(400, f"Unknown field: {extra[0]}")
        model = body.get("model")
        if model not in CAPS:
            return self.error(404, f"Model '{model}' not found")
        docs = body.get("documents")
        if not isinstance(body.get("query"), str) or not isinstance(docs, list) or not docs:
            return self.error(400, "query and a non-empty list of documents are required")
        if not all(isinstance(d, dict) and all(isinstance(v, str) for v in d.values()) for d in docs):
            return self.error(400, "Each document must be an object of string fields")
        if len(docs) > CAPS[model]:
            return self.error(
                400, f"The number of documents ({len(docs)}) exceeds {CAPS[model]} for {model}"
            )
        fields = body.get("rank_fields", ["text"])
        if not strings(fields) or not fields:
            return self.error(400, "rank_fields must be a non-empty list of strings")
        if model in ONE_FIELD and len(fields) != 1:
            return self.error(400, f"Only one rank field is supported for model {model}")
        if any(fields[0] not in d for d in docs):
            return self.error(400, f"Missing '{fields[0]}' field in documents")
        truncate = (body.get("parameters") or {}).get("truncate", "END")
        if truncate not in ("END", "NONE"):
            return self.error(400, "parameters.truncate must be END or NONE")
        top_n = body.get("top_n")
        if top_n is not None and (type(top_n) is not int or top_n < 1):
            return self.error(400, "top_n must be at least 1")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body["documents"]
        field = body.get("rank_fields", ["text"])[0]
        scored = ranked(body["query"], [d[field] for d in docs])
        if body.get("top_n"):
            scored = scored[: body["top_n"]]
        echo = body.get("return_documents", True)
        data = [
            {"index": i, "score": s, **({"document": docs[i]} if echo else {})} for i, s in scored
        ]
        return json_response(
            {"model": body["model"], "data": data, "usage": {"rerank_units": 1}},
            headers={"x-pinecone-request-id": f"pc-{len(self.calls)}"},
        )
