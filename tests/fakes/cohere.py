"""A strict loopback fake of Cohere's rerank API (`/v2/rerank` and `/v1/rerank`).

Like the real service it requires a Bearer key, rejects unknown fields with 422,
validates the body, and answers `{"id","results","meta"}` with `{"id","message"}`
errors. Scores are deterministic per (query, document), independent of the batch.
Rerank 5 models (`rerank-v5.0-*`) take `relevant_spans` as the `cohere` 7.3 SDK's types
describe it and answer each result's spans: every occurrence of a query word in the
document, `[start, end)` in code points, scored by the word's length, above the
threshold (0.1 by default), most relevant first, at most `max_spans`, omitted when none;
other models refuse an enabled `relevant_spans` with 400 (Cohere's wording UNVERIFIED).
`meta` adds what a test puts there (api_version flags, tokens, warnings).
Tests steer it with `faults` (delay, error status with Retry-After, malformed JSON,
hang, connection reset), may replace its `score` function, and read what it received
from `calls`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

V2_FIELDS = {
    "model",
    "query",
    "documents",
    "top_n",
    "max_tokens_per_doc",
    "priority",
    "relevant_spans",
}
SPAN_FIELDS = {"mode", "threshold", "max_spans"}
DEFAULT_SPAN_THRESHOLD = 0.1
V1_FIELDS = {
    "model",
    "query",
    "documents",
    "top_n",
    "rank_fields",
    "return_documents",
    "max_chunks_per_doc",
}
_WORD = re.compile(r"\w+")


def fake_score(query: str, document: str) -> float:
    """Word overlap with the query, plus a small stable hash so ties are rare."""
    q = set(_WORD.findall(query.lower()))
    d = set(_WORD.findall(document.lower()))
    overlap = len(q & d) / len(q) if q else 0.0
    digest = hashlib.blake2b(f"{query}\x00{document}".encode(), digest_size=4).digest()
    jitter = int.from_bytes(digest, "big") / 2**32
    return round(0.9 * overlap + 0.1 * jitter, 6)


@dataclass
class Faults:
    delay_s: float = 0.0
    status: int | None = None  # answer this status with a Cohere error body
    retry_after: str | None = None
    malformed: bool = False  # 200 with a body that is not JSON
    hang: bool = False  # never answer
    reset: bool = False  # close the connection without answering
    # Answer `status` (default 400) with a message that quotes the request's headers and
    # the start of its body, as a debugging proxy or a careless server does.
    echo: bool = False
    echoed: list[dict[str, str]] = field(default_factory=list)  # the headers it quoted
    times: int | None = None  # apply to this many calls, then behave (None: always)
    # Hold each call until the test sets this event (`arrived` is set when one is held).
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)

    def active(self) -> bool:
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class FakeCohere:
    api_key: str = "upstream-key"
    faults: Faults = field(default_factory=Faults)
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each call
    # How it scores (query, document); tests give two fakes different opinions.
    score: Callable[[str, str], float] = fake_score
    # Rerank 5 bills tokens: report them as `meta.billed_units.input_tokens` (the field
    # Cohere's other endpoints bill tokens by; v5's own shape is UNVERIFIED), or nothing.
    report_tokens: bool = True
    # Added to every answer's `meta` (e.g. {"api_version": {"is_deprecated": True}}).
    meta: dict[str, Any] = field(default_factory=dict)
    # Set at shutdown, so hanging handlers end and the server stops without waiting.
    _shutdown: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/rerank", self._handler(2))
        app.router.add_post("/v1/rerank", self._handler(1))
        app.on_shutdown.append(self._release_hangs)
        return app

    async def _release_hangs(self, app: web.Application) -> None:
        self._shutdown.set()

    def _handler(self, version: int):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.rerank(request, version)

        return handle

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        """An error in this service's envelope (subclasses change it)."""
        return error(status, message, headers)

    async def rerank(self, request: web.Request, version: int) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if not self.authorized(request):
            return self.error(401, "invalid api token")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.error(400, "invalid request: body is not valid JSON")
        self.calls.append(body)
        self.arrivals.append(time.monotonic())
        if self.faults.active():
            injected = await inject(self.faults, request, self.error, self._shutdown)
            if injected is not None:
                return injected
        return answer(
            body,
            version,
            self.error,
            self.score,
            report_tokens=self.report_tokens,
            extra_meta=self.meta,
        )


ErrorFactory = Callable[..., web.Response]  # (status, message, headers=None)


async def inject(
    f: Faults,
    request: web.Request,
    make_error: ErrorFactory,
    shutdown: asyncio.Event | None = None,
) -> web.StreamResponse | None:
    """Apply `f` to a request: hold, wait, hang, reset, answer garbage or an error, or None.

    A hang lasts until `shutdown` is set (if given), so the server can stop at once."""
    if f.hold is not None:
        f.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, f.hold.wait)
    if f.delay_s:
        await asyncio.sleep(f.delay_s)
    if f.hang:
        await (shutdown or asyncio.Event()).wait()
        return make_error(503, "shutting down")
    if f.reset:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)
    if f.malformed:
        return web.Response(status=200, body=b"{not json", content_type="application/json")
    if f.echo:
        headers = {str(name): value for name, value in request.headers.items()}
        f.echoed.append(headers)
        seen = {"headers": headers, "body": (await request.text())[:300]}
        return make_error(f.status or 400, f"cannot handle {orjson.dumps(seen).decode()}")
    if f.status is not None:
        headers = {"Retry-After": f.retry_after} if f.retry_after else {}
        return make_error(f.status, f"injected failure {f.status}", headers)
    return None


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"id": str(uuid.uuid4()), "message": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


TOKEN_MODELS = ("rerank-v5.0-pro", "rerank-v5.0-fast")


def pair_tokens(query: str, documents: list[str]) -> int:
    """What the fake bills a token-priced model: one token per word of each (query, document)
    pair, at least one per pair (the same stand-in tokenizer as the other fakes)."""
    words = len(_WORD.findall(query))
    return sum(max(1, words + len(_WORD.findall(d))) for d in documents)


def answer(
    body: Any,
    version: int,
    error: ErrorFactory = error,
    score: Callable[[str, str], float] = fake_score,
    *,
    report_tokens: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> web.Response:
    """Validate a body as Cohere does and rank it; errors from `error` (Cohere's shape)."""
    if not isinstance(body, dict):
        return error(400, "invalid request: body must be an object")
    allowed = V2_FIELDS if version == 2 else V1_FIELDS
    for key in body:
        if key not in allowed:
            return error(
                422,
                f"unknown field: parameter '{key}' is not a valid field. For proper usage, "
                "please refer to https://docs.cohere.com/reference/rerank",
            )
    if version == 2 and not body.get("model"):
        return error(400, "invalid request: a model parameter is required for this endpoint.")
    query, docs = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not query.strip():
        return error(400, "invalid request: query must not be empty or be only whitespace")
    if not isinstance(docs, list) or not docs:
        return error(400, "invalid request: list of documents must not be empty")
    if not all(isinstance(d, str) for d in docs):
        return error(400, "invalid request: documents must be strings")
    priority = body.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 999):
        return error(400, "invalid request: priority must be an integer between 0 and 999")
    spans = span_options(body.get("relevant_spans"), body.get("model"))
    if isinstance(spans, str):
        status, _, message = spans.partition(" ")
        return error(int(status), message)
    scored = sorted(((i, score(query, d)) for i, d in enumerate(docs)), key=lambda p: (-p[1], p[0]))
    if body.get("top_n") is not None:
        scored = scored[: body["top_n"]]
    meta: dict[str, Any] = {"api_version": {"version": str(version)}}
    if body.get("model") not in TOKEN_MODELS:
        meta["billed_units"] = {"search_units": math.ceil(len(docs) / 100)}
    elif report_tokens:
        meta["billed_units"] = {"input_tokens": pair_tokens(query, docs)}
    for key, value in (extra_meta or {}).items():
        meta[key] = {**meta[key], **value} if isinstance(meta.get(key), dict) else value
    results: list[dict[str, Any]] = []
    for i, s in scored:
        result: dict[str, Any] = {"index": i, "relevance_score": s}
        if spans is not None:
            found = relevant_spans(query, docs[i], *spans)
            if found:
                result["relevant_spans"] = found
        results.append(result)
    return web.json_response(
        {"id": str(uuid.uuid4()), "results": results, "meta": meta},
        headers={"x-debug-trace-id": uuid.uuid4().hex},
    )


def span_options(value: Any, model: Any) -> tuple[float, int | None] | str | None:
    """(threshold, max_spans) of an enabled `relevant_spans`, None when absent or
    disabled, or "<status> <message>" when Cohere would refuse it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "400 invalid request: relevant_spans must be an object"
    unknown = sorted(set(value) - SPAN_FIELDS)
    if unknown:
        return f"422 unknown field: parameter 'relevant_spans.{unknown[0]}' is not a valid field"
    mode, threshold, max_spans = value.get("mode"), value.get("threshold"), value.get("max_spans")
    if mode not in ("enabled", "disabled"):
        return "400 invalid request: relevant_spans.mode must be enabled or disabled"
    if threshold is not None and (type(threshold) not in (int, float) or not 0 <= threshold <= 1):
        return "400 invalid request: relevant_spans.threshold must be between 0 and 1"
    if max_spans is not None and (type(max_spans) is not int or max_spans < 1):
        return "400 invalid request: relevant_spans.max_spans must be at least 1"
    if mode == "disabled":
        return None
    if model not in TOKEN_MODELS:
        return "400 invalid request: relevant_spans is only supported for Rerank v5 and newer"
    return (DEFAULT_SPAN_THRESHOLD if threshold is None else threshold), max_spans


def relevant_spans(
    query: str, document: str, threshold: float, max_spans: int | None
) -> list[dict[str, Any]]:
    """Every occurrence of a query word in `document` (code points, `[start, end)`),
    scored len/(len + 4), above `threshold`, best first (ties by position)."""
    words = {w.lower() for w in _WORD.findall(query)}
    found = [
        {"start": m.start(), "end": m.end(), "score": round(len(m[0]) / (len(m[0]) + 4), 6)}
        for m in _WORD.finditer(document)
        if m[0].lower() in words
    ]
    found = [s for s in found if s["score"] > threshold]
    found.sort(key=lambda s: (-s["score"], s["start"]))
    return found[:max_spans] if max_spans is not None else found
