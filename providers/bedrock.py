"""AWS Bedrock: Cohere Rerank through InvokeModel (default) or the agent-runtime Rerank API.

InvokeModel takes Cohere's v2 body without `model` plus `api_version: 2` and rejects any
key it does not know, so the body is exactly `query`, `documents`, `api_version` (and
`max_tokens_per_doc` only when `forward_max_tokens_per_doc` is on: whether Bedrock
accepts it is unverified). Requests are signed with SigV4 (service `bedrock`) over the
exact bytes and path sent, or carry a Bedrock API key as Bearer (InvokeModel only).
Bedrock reports no usage, so `search_units` is None and the gateway estimates it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
import yarl

from providers.extra_options import BedrockOptions
from providers.http import (
    HttpResponse,
    HttpTransport,
    load_json,
    scores_from_ranks,
    status_error,
)
from providers.sigv4 import AwsSigner
from providers.types import AUTH, ProviderError, UpstreamCall, UpstreamResult

# Error codes (x-amzn-ErrorType) whose status alone says the wrong thing.
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
    }
)
# Quota (400) and model failures (424) are not the caller's fault: try elsewhere.
_RETRYABLE_CODES = frozenset(
    {"ServiceQuotaExceededException", "ModelErrorException", "DependencyFailedException"}
)


class BedrockProvider:
    """The `bedrock` provider type."""

    type = "bedrock"
    batch_relative = False

    def __init__(self, name: str, options: BedrockOptions) -> None:
        self.name = name
        self.options = options
        host = "bedrock-runtime" if options.api == "invoke" else "bedrock-agent-runtime"
        base = options.endpoint_url or f"https://{host}.{options.region}.amazonaws.com"
        self.base = base.rstrip("/")
        self.transport = HttpTransport(name, options.max_connections)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.signer: AwsSigner | None = None
        if options.api_key:
            self.headers["Authorization"] = f"Bearer {options.api_key}"
        else:
            self.signer = AwsSigner(name, options.region, "bedrock", options.profile)
        self._urls: dict[str, str] = {}

    async def start(self) -> None:
        await self.transport.start()
        if self.signer is not None:
            await self.signer.start()

    async def close(self) -> None:
        await self.transport.close()

    def url(self, model: str) -> str:
        """The percent-encoded URL, as boto3 writes it (`:` as %3A, `/` in ARNs as %2F)."""
        url = self._urls.get(model)
        if url is None:
            if self.options.api == "invoke":
                url = f"{self.base}/model/{quote(model, safe='')}/invoke"
            else:
                url = f"{self.base}/rerank"
            self._urls[model] = url
        return url

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        forward = self.options.forward_max_tokens_per_doc and call.max_tokens_per_doc is not None
        if self.options.api == "invoke":
            body: dict[str, Any] = {
                "query": call.query,
                "documents": list(call.documents),
                "api_version": 2,
            }
            if forward:
                body["max_tokens_per_doc"] = call.max_tokens_per_doc
            return body
        model: dict[str, Any] = {"modelArn": self.model_arn(call.model)}
        if forward:
            model["additionalModelRequestFields"] = {"max_tokens_per_doc": call.max_tokens_per_doc}
        return {
            "queries": [{"type": "TEXT", "textQuery": {"text": call.query}}],
            "sources": [_text_source(d) for d in call.documents],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "numberOfResults": len(call.documents),
                    "modelConfiguration": model,
                },
            },
        }

    def model_arn(self, model: str) -> str:
        if model.startswith("arn:"):
            return model
        return f"arn:aws:bedrock:{self.options.region}::foundation-model/{model}"

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        url = self.url(call.model)
        data = orjson.dumps(self.body(call))
        headers = self.headers
        if self.signer is not None:
            headers = await self.signer.sign(url, data, headers)
        # encoded=True: yarl would otherwise decode %3A and the signed path would differ.
        timeout = min(self.options.timeout_s, call.timeout_s)
        resp = await self.transport.post(
            yarl.URL(url, encoded=True), data, headers, timeout, call.trace_headers
        )
        if resp.status >= 400:
            raise self.error(resp)
        return self.parse(resp, len(call.documents))

    def parse(self, resp: HttpResponse, count: int) -> UpstreamResult:
        payload = load_json(self.name, resp)
        results = payload.get("results") if isinstance(payload, dict) else None
        key = "relevance_score" if self.options.api == "invoke" else "relevanceScore"
        scores = scores_from_ranks(self.name, results, count, score_key=key, resp=resp)
        upstream_id = resp.request_id
        if upstream_id is None and isinstance(payload.get("id"), str):
            upstream_id = payload["id"]
        return UpstreamResult(scores=scores, search_units=None, upstream_request_id=upstream_id)

    def error(self, resp: HttpResponse) -> ProviderError:
        code = aws_error_code(resp.headers.get("x-amzn-errortype"))
        if code in _AUTH_CODES:
            return status_error(self.name, resp, code, kind=AUTH, retryable=False)
        if code in _RETRYABLE_CODES:
            return status_error(self.name, resp, code, retryable=True)
        return status_error(self.name, resp, code)


def _text_source(text: str) -> dict[str, Any]:
    source = {"type": "TEXT", "textDocument": {"text": text}}
    return {"type": "INLINE", "inlineDocumentSource": source}


def aws_error_code(header: str | None) -> str | None:
    """`ThrottlingException:http://internal.amazon.com/...` -> `ThrottlingException`, as
    botocore reads it (cut at the first `:`, keep what follows the last `#`)."""
    if not header:
        return None
    code = header.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return code or None
