"""The shared shape of the JSON-over-HTTP rerankers (TEI, vLLM, Infinity, Jina, Voyage,
NIM): one URL, an optional Bearer key, a body per sub-batch, an answer to parse.

Each provider module says only what differs: its request body, where the scores and
the usage sit in its answer, and how its errors read. Splitting into sub-batches,
timeouts, request ids and the HTTP error mapping live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from providers.batching import in_batches
from providers.http import HttpProvider, HttpResponse, status_error
from providers.types import ProviderError, UpstreamCall, UpstreamResult


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
    """Base of the JSON rerankers: subclasses give `type`, `body` and `parse`."""

    options: HttpOptions

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        timeout = min(self.options.timeout_s, call.timeout_s)
        headers = self.headers
        if call.request_id:
            headers = {**headers, "X-Request-Id": call.request_id}

        async def score(documents: Sequence[str]) -> UpstreamResult:
            body = orjson.dumps(self.body(call, documents))
            resp = await self.transport.post(
                self.url, body, headers, timeout, call.trace_headers
            )
            if resp.status >= 400:
                raise self.error(resp)
            return self.parse(resp, len(documents))

        # A listwise model scores the documents together: never split.
        size = None if call.listwise else self.options.max_batch_size
        return await in_batches(call.documents, size, score)

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        raise NotImplementedError

    def error(self, resp: HttpResponse) -> ProviderError:
        return status_error(self.name, resp)
