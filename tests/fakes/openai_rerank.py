"""Strict loopback fakes of the two hosted "OpenAI-style" rerank shapes.

- `FakeTogether`: Together's Cohere-compatible `POST /v1/rerank` (Fireworks is said to
  take the same shape: UNVERIFIED). Bearer key; fields `model`, `query`, `documents`,
  `top_n`, `return_documents`, `rank_fields`, anything else 400 in the OpenAI error
  envelope `{"error": {message, type, param, code}}`; the answer `{"id", "object":
  "rerank", "model", "results": [{index, relevance_score, document?}], "usage":
  {prompt_tokens, completion_tokens, total_tokens}}` (the usage fields are UNVERIFIED).
- `FakeDeepInfra`: `POST /v1/inference/{model}` with `{"queries": [..], "documents":
  [..]}` of one length (a third-party finding: UNVERIFIED), `Authorization: bearer
  <token>` (either case of the scheme); the answer `{"scores": [..], "input_tokens",
  "request_id", "inference_status"}` in input order, unsorted; errors `{"detail"}`
  (UNVERIFIED).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.cohere import fake_score
from tests.fakes.jina import FakeJina
from tests.fakes.strict import StrictFake, json_response, strings, token_count, unknown_fields

TOGETHER_KEY = "together-test-key"
DEEPINFRA_KEY = "deepinfra-test-key"
QWEN = "Qwen/Qwen3-Reranker-0.6B"
TOGETHER_FIELDS = {"model", "query", "documents", "top_n", "return_documents", "rank_fields"}
TOGETHER_MODELS = ("Salesforce/Llama-Rank-V1", "mixedbread-ai/Mxbai-Rerank-Large-V2", QWEN)
DEEPINFRA_MODELS = (QWEN, "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B")


@dataclass
class FakeTogether(FakeJina):
    """Jina's rules with Together's names, models, envelope and extra answer fields."""

    api_key: str | None = TOGETHER_KEY
    fields: frozenset[str] = frozenset(TOGETHER_FIELDS)
    models: tuple[str, ...] = TOGETHER_MODELS

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return json_response(body, status, headers)

    def unauthorized(self) -> web.Response:
        return self.error(401, "Invalid API key provided")

    def extra_field(self, name: str) -> web.Response:
        return self.error(400, f"Unrecognized request argument supplied: {name}")

    def unknown_model(self, model: Any) -> web.Response:
        return self.error(404, f"Unable to access model {model}")

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = super().payload(body)  # Jina echoes documents unless asked not to
        if not body.get("return_documents", False):
            for result in answer["results"]:
                result.pop("document", None)
        tokens = answer["usage"]["total_tokens"]
        usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        return {"id": f"rerank-{len(self.calls)}", "object": "rerank", **answer, "usage": usage}


@dataclass
class FakeDeepInfra(StrictFake):
    api_key: str | None = DEEPINFRA_KEY
    paths: tuple[str, ...] = ("/v1/inference/{model:.+}",)

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.api_key

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response({"detail": message}, status, headers)

    def unauthorized(self) -> web.Response:
        return self.error(401, "Unauthorized")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["model"] not in DEEPINFRA_MODELS:
            return self.error(404, f"Model is not available: {request.match_info['model']}")
        return await super().handle(request)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, {"queries", "documents", "instruction"})
        if extra:
            return self.error(422, f"Extra inputs are not permitted: {extra[0]}")
        queries, docs = body.get("queries"), body.get("documents")
        if not strings(queries) or not strings(docs) or not docs:
            return self.error(422, "queries and documents must be lists of strings")
        if len(queries) != len(docs):
            return self.error(422, "queries and documents must have the same length")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        pairs = list(zip(body["queries"], body["documents"], strict=True))
        tokens = sum(token_count(q, d) for q, d in pairs)
        return json_response(
            {
                "scores": [fake_score(q, d) for q, d in pairs],
                "input_tokens": tokens,
                "request_id": f"di-{len(self.calls)}",
                "inference_status": {
                    "status": "succeeded",
                    "runtime_ms": 12,
                    "cost": tokens * 1e-8,
                    "tokens_generated": 0,
                    "tokens_input": tokens,
                },
            }
        )
