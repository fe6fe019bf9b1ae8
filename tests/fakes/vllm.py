"""A strict loopback fake of vLLM's rerank routes (`/rerank`, `/v1/rerank`, `/v2/rerank`).

Like vLLM: `--api-key` is checked only under `/v1` and `/v2` (plain `/rerank` answers
without a key: the trap the provider avoids), the 401 body is `{"error": "Unauthorized"}`,
a model other than the served one gets 404, a body without `query` or `documents` gets
400 in the OpenAI error shape, unknown fields are ignored (vLLM's `extra="allow"`),
`top_n` 0 means all, and every result echoes its document as `{"text"}`, asked or not.
Usage is `usage.prompt_tokens`. A non-zero `priority` is refused unless the server runs
with priority scheduling (`priority_scheduling`), as vLLM refuses it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, strings, token_count

SERVED_MODEL = "BAAI/bge-reranker-v2-m3"


@dataclass
class FakeVllm(StrictFake):
    paths: tuple[str, ...] = ("/rerank", "/v1/rerank", "/v2/rerank")
    served_model: str = SERVED_MODEL
    priority_scheduling: bool = False  # vLLM's --scheduling-policy priority

    def needs_key(self, path: str) -> bool:
        return self.api_key is not None and path.startswith(("/v1/", "/v2/"))

    def unauthorized(self) -> web.Response:
        return json_response({"error": "Unauthorized"}, 401)

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = (
            "NotFoundError"
            if status == 404
            else "BadRequestError"
            if status < 500
            else "InternalServerError"
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return json_response(body, status, headers)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        for name in ("query", "documents"):
            if name not in body:
                return self.error(
                    400,
                    f"[{{'type': 'missing', 'loc': ('body', '{name}'), 'msg': 'Field required'}}]",
                )
        if not isinstance(body["query"], str) or not strings(body["documents"]):
            return self.error(400, "query must be a string and documents a list of strings")
        model = body.get("model")
        if model is not None and model != self.served_model:
            return self.error(404, f"The model `{model}` does not exist.")
        priority = body.get("priority", 0)
        if priority != 0 and not self.priority_scheduling:
            return self.error(
                400, f"Got priority {priority} but Priority scheduling is not enabled."
            )
        top_n = body.get("top_n", 0)
        if type(top_n) is not int or top_n < 0:
            return self.error(400, "top_n must be a non-negative integer")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body["documents"]
        scored = ranked(body["query"], docs)
        if body.get("top_n"):
            scored = scored[: body["top_n"]]
        tokens = token_count(body["query"], *docs)
        return json_response(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": self.served_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": [
                    {"index": i, "document": {"text": docs[i]}, "relevance_score": s}
                    for i, s in scored
                ],
            }
        )
