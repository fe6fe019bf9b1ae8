"""Azure AI semantic reranker (Azure Data AI): the Azure AI Search semantic ranker's model
as its own API, `POST {endpoint}/inference/semanticReranking?api-version=2026-10-30`.

The wire is camelCase (`query`, `documents`, `returnDocuments`, `batchSize`, ...) and the
answer is `{"scores": [{index, score}], "meta": {"tokenUsage": {"totalTokens"}}}`, scores
in 0..1. The key goes in `Ocp-Apim-Subscription-Key`; with `auth: entra` an Entra ID
token for `https://dbinference.azure.com/.default` is fetched with the client-credentials
grant (providers/oauth.py) and sent as a Bearer token. Errors come as Azure's
`{"error": {code, message}}` with `x-ms-error-code`, or as a bare RFC 7807 problem; both
are read. The endpoint's host form, the documents cap and the price are not published
(UNVERIFIED): the endpoint is taken whole from config and the cap is `max_batch_size`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import msgspec
from annotated_types import Ge

from providers.answers import IndexScore, align, decode, usage_tokens
from providers.http import (
    HttpResponse,
    UpstreamOptions,
    bearer_headers,
    check_http_url,
    status_error,
)
from providers.oauth import TokenSource
from providers.rerank_http import RerankHttpProvider
from providers.types import CALIBRATED, ProviderError, UpstreamCall, UpstreamResult

GA_API_VERSION = "2026-10-30"
ENTRA_SCOPE = "https://dbinference.azure.com/.default"
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
# Azure's codes for a missing or unknown api-version (UNVERIFIED for this service).
API_VERSION_CODES = frozenset({"MissingApiVersionParameter", "UnsupportedApiVersionValue"})


@dataclass
class AzureSemanticOptions(UpstreamOptions):
    endpoint: str  # the inference account's endpoint, with any path prefix
    auth: Literal["key", "entra"] = "key"
    api_key: str | None = None  # for `key`: sent as Ocp-Apim-Subscription-Key
    # For `entra`: an app registration with the Semantic Reranker User role.
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    authority_url: str = ENTRA_AUTHORITY  # sovereign clouds, or a test's token fake
    scope: str = ENTRA_SCOPE
    api_version: str = GA_API_VERSION
    path: str = "/inference/semanticReranking"
    send_model: bool = True  # false: leave `model` out and let the service pick its default
    # Documents per request: the service's cap is not published (UNVERIFIED).
    max_batch_size: Annotated[int, Ge(1)] = 100
    batch_size: Annotated[int, Ge(1)] | None = None  # the service's own internal `batchSize`
    type: Literal["azure_semantic"] = "azure_semantic"  # the config's `type` key

    def __post_init__(self) -> None:
        check_http_url("endpoint", self.endpoint)
        check_http_url("authority_url", self.authority_url)
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with / (got {self.path!r})")
        if self.auth == "key" and not self.api_key:
            raise ValueError("api_key is required with auth: key (or use auth: entra)")
        if self.auth == "entra":
            missing = [
                name
                for name in ("tenant_id", "client_id", "client_secret")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"auth: entra needs {', '.join(missing)}")

    @property
    def base_url(self) -> str:  # what HttpProvider joins with `path`
        return self.endpoint

    @property
    def token_url(self) -> str:
        return f"{self.authority_url.rstrip('/')}/{self.tenant_id}/oauth2/v2.0/token"


class _Meta(msgspec.Struct, rename="camel"):
    token_usage: Any = None  # `tokenUsage: {totalTokens}`


class _Answer(msgspec.Struct):
    scores: list[IndexScore]
    meta: _Meta | None = None


class AzureSemanticProvider(RerankHttpProvider):
    """The `azure_semantic` provider type."""

    type = "azure_semantic"
    score_scale = CALIBRATED  # relevance in 0..1 (the Cosmos DB announcement)
    options: AzureSemanticOptions

    def __init__(self, name: str, options: AzureSemanticOptions) -> None:
        super().__init__(name, options)
        self.url += "?" + urlencode({"api-version": options.api_version})
        self.headers = bearer_headers(None)  # the key goes in its own header
        self.tokens: TokenSource | None = None
        if options.auth == "key":
            assert options.api_key is not None
            self.headers["Ocp-Apim-Subscription-Key"] = options.api_key
        else:
            form = urlencode(
                {
                    "grant_type": "client_credentials",
                    "client_id": options.client_id,
                    "client_secret": options.client_secret,
                    "scope": options.scope,
                }
            ).encode()
            self.tokens = TokenSource(name, self.transport, options.token_url, lambda: form)

    async def call_headers(self, call: UpstreamCall, timeout_s: float) -> Mapping[str, str]:
        headers = await super().call_headers(call, timeout_s)
        if self.tokens is None:
            return headers
        token = await self.tokens.token(timeout_s)
        return {**headers, "Authorization": f"Bearer {token}"}

    def body(self, call: UpstreamCall, documents: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": call.query,
            "documents": list(documents),
            "returnDocuments": False,
        }
        if self.options.send_model:
            body["model"] = call.model
        if self.options.batch_size is not None:
            body["batchSize"] = self.options.batch_size
        return body

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        answer = decode(self.name, resp, _Answer)
        usage = answer.meta.token_usage if answer.meta else None
        return UpstreamResult(
            scores=align(self.name, ((s.index, s.score) for s in answer.scores), count, resp),
            tokens=usage_tokens(usage, "totalTokens"),
            upstream_request_id=resp.request_id or resp.headers.get("x-correlation-id"),
        )

    def error(self, resp: HttpResponse) -> ProviderError:
        err = status_error(self.name, resp, resp.headers.get("x-ms-error-code"))
        if err.code in API_VERSION_CODES:  # our api_version, not the caller's request
            err.status, err.retryable = 404, False
            err.message += f" (check providers.{self.name}.api_version)"
        return err
