"""Google Vertex AI ranking (Discovery Engine's RankService):
`POST https://discoveryengine.googleapis.com/v1/projects/{p}/locations/{l}/rankingConfigs/{c}:rank`.

Each document goes as a record `{id, content}` with its index as id, and
`ignoreRecordDetailsInResponse` keeps the answer to `{"records": [{id, score}]}`, sorted
best first: the scores are mapped back by id. A record needs a title or content, so an
empty document is not sent and scores 0.0. At most 200 records per request (the
proto's limit; a larger one is UNVERIFIED), so larger calls are split. Scores are 0..1,
rounded to two decimals: ties are common. There is no usage block: the call is billed
per query, one per 100 records as the published price reads (UNVERIFIED), so
`search_units` counts ceil(records / 100) per request.

Auth is a service account's OAuth token (providers/google_auth.py, the `vertex` extra),
fetched from its `token_uri` (or `token_url`) and kept until shortly before it expires.
Google's errors are `{"error": {code, message, status}}`; `status` (`INVALID_ARGUMENT`,
`RESOURCE_EXHAUSTED`, ...) is kept as the error code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from providers.answers import align, decode
from providers.credentials import LazyCredential
from providers.extra_options import VertexOptions
from providers.google_auth import ServiceAccount, load_service_account, signed_grant
from providers.http import (
    HttpResponse,
    malformed,
    status_error,
)
from providers.oauth import TokenSource
from providers.rerank_http import RerankHttpProvider
from providers.types import CALIBRATED, ProviderError, UpstreamCall, UpstreamResult

RECORDS_PER_QUERY = 100  # what one billed query covers (UNVERIFIED)


class _Record(msgspec.Struct):
    id: str
    score: float = 0.0  # proto3 JSON leaves out a zero score


class _Answer(msgspec.Struct):
    records: list[_Record] = []


class VertexProvider(RerankHttpProvider):
    """The `vertex` provider type."""

    type = "vertex"
    score_scale = CALIBRATED  # 0..1, rounded to 0.01 by Vertex
    skips_empty = True  # a record without title and content is INVALID_ARGUMENT
    options: VertexOptions

    def __init__(self, name: str, options: VertexOptions) -> None:
        super().__init__(name, options)
        if options.quota_project:
            self.headers["X-Goog-User-Project"] = options.quota_project
        self.account: LazyCredential[ServiceAccount] = LazyCredential(
            name,
            "Google service-account credentials",
            lambda: load_service_account(options.credentials_json, options.credentials_file),
        )
        self._tokens: TokenSource | None = None

    async def start(self) -> None:
        await super().start()
        await self.account.start()

    async def call_headers(self, call: UpstreamCall, timeout_s: float) -> Mapping[str, str]:
        headers = await super().call_headers(call, timeout_s)
        token = await (await self._token_source()).token(timeout_s)
        return {**headers, "Authorization": f"Bearer {token}"}

    async def _token_source(self) -> TokenSource:
        if self._tokens is None:
            account = await self.account.get()
            url = self.options.token_url or account.token_uri
            self._tokens = TokenSource(
                self.name, self.transport, url, lambda: signed_grant(account, url)
            )
        return self._tokens

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        return {
            "model": call.model,
            "query": call.query,
            "records": [{"id": str(i), "content": doc} for i, doc in enumerate(documents)],
            "ignoreRecordDetailsInResponse": True,
        }

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, _Answer)
        try:
            pairs = [(int(r.id), r.score) for r in answer.records]
        except ValueError:
            raise malformed(self.name, "a record id the gateway did not send", resp) from None
        return UpstreamResult(
            scores=align(self.name, pairs, count, resp),
            search_units=math.ceil(count / RECORDS_PER_QUERY),
            upstream_request_id=resp.request_id,
        )

    def error(self, resp: HttpResponse) -> ProviderError:
        return status_error(self.name, resp, _google_status(resp.body))


def _google_status(body: bytes) -> str | None:
    """`error.status` of Google's envelope (`INVALID_ARGUMENT`, ...), bounded."""
    try:
        data = orjson.loads(body[:4096])
    except orjson.JSONDecodeError:
        return None
    inner = data.get("error") if isinstance(data, dict) else None
    status = inner.get("status") if isinstance(inner, dict) else None
    return status[:64] if isinstance(status, str) else None
