"""A strict loopback fake of Mixedbread's `POST /v1/reranking`.

Like Mixedbread's API reference: a Bearer key; `input` of 1..1,000 strings or objects
(objects need `rank_fields`); `top_k` at least 1, or -1 for all (above the count it is
clipped: UNVERIFIED); unknown keys are FastAPI's 422 `extra_forbidden` (the real
envelope is UNVERIFIED), other errors `{"detail": "..."}`. The answer is `{"usage":
{prompt_tokens, total_tokens}, "model", "data": [{index, score, input?, object:
"rank_result"}], "object": "list", "top_k", "return_input"}`, best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, strings, token_count

MIXEDBREAD_KEY = "mxb_test_key"
FIELDS = {"model", "query", "input", "rank_fields", "top_k", "return_input", "rewrite_query"}
MODELS = tuple(
    f"mixedbread-ai/mxbai-rerank-{size}"
    for size in ("large-v2", "base-v2", "large-v1", "base-v1", "xsmall-v1")
)
MAX_INPUT = 1000


@dataclass
class FakeMixedbread(StrictFake):
    api_key: str | None = MIXEDBREAD_KEY
    paths: tuple[str, ...] = ("/v1/reranking",)

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response({"detail": message}, status, headers)

    def unauthorized(self) -> web.Response:
        return self.error(401, "Invalid API key")

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = [k for k in body if k not in FIELDS]
        if extra:
            detail = [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", key],
                    "msg": "Extra inputs are not permitted",
                    "input": body[key],
                }
                for key in extra
            ]
            return json_response({"detail": detail}, 422)
        if body.get("model", MODELS[0]) not in MODELS:
            return self.error(404, f"Model {body.get('model')} not found")
        query, items = body.get("query"), body.get("input")
        if not isinstance(query, str) or not query:
            return self.error(422, "query must be a non-empty string")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_INPUT:
            return self.error(422, f"input must hold 1 to {MAX_INPUT} items")
        if not strings(items) and not body.get("rank_fields"):
            return self.error(422, "rank_fields are required for object inputs")
        top_k = body.get("top_k", -1)
        if type(top_k) is not int or (top_k < 1 and top_k != -1):
            return self.error(422, "top_k must be at least 1, or -1 for all")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        items = body["input"]
        texts = items if strings(items) else [str(i.get(body["rank_fields"][0], "")) for i in items]
        scored = ranked(body["query"], texts)
        top_k = body.get("top_k", -1)
        if top_k > 0:
            scored = scored[:top_k]
        echo = body.get("return_input", False)
        data = [
            {"index": i, "score": s, "object": "rank_result", **({"input": items[i]} if echo else {})}
            for i, s in scored
        ]
        tokens = token_count(body["query"], *texts)
        return json_response(
            {
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "model": body.get("model", MODELS[0]),
                "data": data,
                "object": "list",
                "top_k": top_k,
                "return_input": echo,
            }
        )
