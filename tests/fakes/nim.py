"""A strict loopback fake of an NVIDIA NIM text reranker's `POST /v1/ranking`.

Like NIM: `query` must be `{"text"}` and `passages` a list of `{"text"}` (plain strings
or a `documents` field are refused), `truncate` is `NONE` or `END`, at most 512 passages
per request, the model must be the served one, and the answer is
`{"rankings": [{index, logit}]}` best first, with raw logits and no usage. The logit
is the log-odds of the Cohere fake's score, so its sigmoid is that score. No key by
default (self-hosted); with `api_key` set it wants a Bearer token (NVIDIA's hosted API).
Error body `{"detail"}` (NIM's exact error envelope is UNVERIFIED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, unknown_fields

SERVED_MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
FIELDS = {"model", "query", "passages", "truncate"}
MAX_PASSAGES = 512


def logit_of(score: float) -> float:
    p = min(max(score, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _texts(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    texts = [p.get("text") if isinstance(p, dict) and set(p) == {"text"} else None for p in value]
    return None if any(not isinstance(t, str) for t in texts) else texts  # type: ignore[return-value]


@dataclass
class FakeNim(StrictFake):
    paths: tuple[str, ...] = ("/v1/ranking",)
    served_model: str = SERVED_MODEL
    max_passages: int = MAX_PASSAGES

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response({"detail": message}, status, headers)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        extra = unknown_fields(body, FIELDS)
        if extra:
            return self.error(422, f"Extra inputs are not permitted: {extra[0]}")
        if body.get("model") != self.served_model:
            return self.error(404, f"Model {body.get('model')} not found")
        query = body.get("query")
        if not (
            isinstance(query, dict) and set(query) == {"text"} and isinstance(query["text"], str)
        ):
            return self.error(422, "query must be an object {text}")
        passages = _texts(body.get("passages"))
        if not passages:
            return self.error(422, "passages must be a non-empty list of objects {text}")
        if len(passages) > self.max_passages:
            return self.error(422, f"at most {self.max_passages} passages per request")
        if body.get("truncate", "NONE") not in ("NONE", "END"):
            return self.error(422, "truncate must be NONE or END")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        passages = _texts(body["passages"]) or []
        rankings = [
            {"index": i, "logit": logit_of(s)} for i, s in ranked(body["query"]["text"], passages)
        ]
        return json_response({"rankings": rankings})
