"""The shared shape of the JSON-over-HTTP rerankers (TEI, vLLM, Infinity, Jina, Voyage,
NIM): one URL, an optional Bearer key, a body per sub-batch, an answer to parse.

Each provider module says only what differs: its request body, where the scores and
the usage sit in its answer, and how its errors read. Splitting into sub-batches,
timeouts, request ids and the HTTP error mapping live here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from providers.answers import parse_ranked, usage_tokens
from providers.batching import in_batches
from providers.http import HttpProvider, HttpResponse, status_error
from providers.types import ProviderError, UpstreamCall, UpstreamResult

EMPTY_SCORE = 0.0


class HttpOptions(Protocol):
    """The options every provider built on `RerankHttpProvider` has."""

    @property
    def base_url(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_batch_size(self) -> int | None: ...  # None: never split


class RerankHttpProvider(HttpProvider):
    """Base of the JSON rerankers: subclasses give `type` and `body`, and may change
    `parse` (the default reads Cohere's shape), `error`, the `url` and the headers a call
    goes with (`call_headers`)."""

    options: HttpOptions
    # Where a Cohere-shaped answer's `usage` counts tokens, the first key found wins.
    usage_keys: tuple[str, ...] = ("total_tokens", "prompt_tokens")
    # Upstreams that refuse empty documents (Voyage, Vertex AI) are not sent them: an
    # empty document scores EMPTY_SCORE, as it has nothing to match.
    skips_empty = False

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        if self.skips_empty and not all(call.documents):
            return await without_empty(call, self._rerank)
        return await self._rerank(call)

    async def _rerank(self, call: UpstreamCall) -> UpstreamResult:
        timeout = min(self.options.timeout_s, call.timeout_s)
        headers = await self.call_headers(call, timeout)
        url = self.url_for(call)

        async def score(documents: Sequence[str]) -> UpstreamResult:
            body = orjson.dumps(self.body(call, documents))
            resp = await self.transport.post(url, body, headers, timeout, call.trace_headers)
            if resp.status >= 400:
                raise self.error(resp)
            return self.parse(resp, len(documents))

        # A listwise model scores the documents together: never split.
        size = None if call.listwise else self.batch_size(call)
        return await in_batches(call.documents, size, score)

    async def call_headers(self, call: UpstreamCall, timeout_s: float) -> Mapping[str, str]:
        """The headers of this call's requests: the JSON and key headers, the request id."""
        if call.request_id:
            return {**self.headers, "X-Request-Id": call.request_id}
        return self.headers

    def url_for(self, call: UpstreamCall) -> str:
        return self.url

    def batch_size(self, call: UpstreamCall) -> int | None:
        """Documents per upstream request (None: never split)."""
        return self.options.max_batch_size

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        """Cohere's answer shape (`results` of `index` and `relevance_score`), as Infinity,
        vLLM and Jina send it; the tokens from `usage` by `usage_keys`."""
        scores, usage = parse_ranked(self.name, resp, count)
        return UpstreamResult(
            scores=scores,
            tokens=usage_tokens(usage, *self.usage_keys),
            upstream_request_id=resp.request_id,
        )

    def error(self, resp: HttpResponse) -> ProviderError:
        return status_error(self.name, resp)


async def without_empty(
    call: UpstreamCall, rerank: Callable[[UpstreamCall], Awaitable[UpstreamResult]]
) -> UpstreamResult:
    """Score only the non-empty documents of `call`; the empty ones get EMPTY_SCORE."""
    kept = [i for i, doc in enumerate(call.documents) if doc]
    scores = [EMPTY_SCORE] * len(call.documents)
    if not kept:
        return UpstreamResult(scores=scores, search_units=0, tokens=0)
    result = await rerank(dataclasses.replace(call, documents=[call.documents[i] for i in kept]))
    for i, score in zip(kept, result.scores, strict=True):
        scores[i] = score
    return dataclasses.replace(result, scores=scores)
