"""A strict loopback fake of the Azure AI semantic reranker (Azure Data AI):
`POST /inference/semanticReranking?api-version=2026-10-30`, and an Entra ID token
endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials) on the same server.

Like the service as its SDKs describe it: the key in `Ocp-Apim-Subscription-Key` or an
Entra Bearer token it issued for scope `https://dbinference.azure.com/.default`; a
missing or unknown `api-version` is a 400 `MissingApiVersionParameter` /
`UnsupportedApiVersionValue`; camelCase keys only (a snake_case spelling gets a hint;
whether the service rejects unknown keys is UNVERIFIED, the fake does); at most
`max_documents` (100; the real cap is UNVERIFIED); `returnDocuments` and `sort` default
true; errors `{"error": {code, message}}` with `x-ms-error-code`, an APIM-style 401.
The answer is `{"scores": [{index, score, document?}], "meta": {tokenUsage, latency,
modelName, modelVersion}}` with an `X-Correlation-ID` header.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.fakes.strict import StrictFake, json_response, ranked, strings, token_count

AZURE_KEY = "azure-semantic-test-key"
TENANT = "tenant-1"
CLIENT_ID = "client-1"
CLIENT_SECRET = "client-secret-1"
SCOPE = "https://dbinference.azure.com/.default"
API_VERSIONS = ("2026-10-30", "2026-09-01-preview", "2026-11-01-preview")
MODELS = ("semantic-reranker-v1",)
FIELDS = {
    "query",
    "documents",
    "returnDocuments",
    "topK",
    "batchSize",
    "sort",
    "documentType",
    "targetPaths",
    "model",
    "returnSentenceScore",
}
SNAKE = {
    "return_documents": "returnDocuments",
    "top_k": "topK",
    "batch_size": "batchSize",
    "document_type": "documentType",
    "target_paths": "targetPaths",
    "return_sentence_score": "returnSentenceScore",
}
CODES = {400: "InvalidRequest", 404: "ModelNotFound", 429: "TooManyRequests"}


@dataclass
class FakeAzureSemantic(StrictFake):
    api_key: str | None = AZURE_KEY
    paths: tuple[str, ...] = ("/inference/semanticReranking",)
    max_documents: int = 100
    token_lifetime_s: int = 3599
    issued: set[str] = field(default_factory=set)
    token_requests: int = 0
    _serial: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        return app

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        if request.match_info["tenant"] != TENANT:
            return _oauth_error(400, "invalid_request", "AADSTS90002: Tenant not found.")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "AADSTS70003: grant type")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return _oauth_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided.\nTrace ID: x"
            )
        if form.get("scope") != SCOPE:
            return _oauth_error(400, "invalid_scope", "AADSTS70011: The provided scope is invalid.")
        token = f"entra-token-{next(self._serial)}"
        self.issued.add(token)
        return json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime_s, "access_token": token}
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        version = request.query.get("api-version")
        if version is None:
            return self.error(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                code="MissingApiVersionParameter",
            )
        if version not in API_VERSIONS:
            return self.error(
                400,
                f"The HTTP resource does not support the API version '{version}'.",
                code="UnsupportedApiVersionValue",
            )
        return await super().handle(request)

    def authorized(self, request: web.Request) -> bool:
        if request.headers.get("Ocp-Apim-Subscription-Key") == self.api_key:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and token in self.issued

    def unauthorized(self) -> web.Response:
        return json_response(
            {
                "statusCode": 401,
                "message": "Access denied due to invalid subscription key or wrong API "
                "endpoint. Make sure to provide a valid key for an active subscription.",
            },
            401,
        )

    def error(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> web.Response:
        code = code or CODES.get(status, "InternalServerError" if status >= 500 else "BadRequest")
        return json_response(
            {"error": {"code": code, "message": message}},
            status,
            {**(headers or {}), "x-ms-error-code": code, "X-Correlation-ID": str(uuid.uuid4())},
        )

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        for key in body:
            if key in SNAKE:
                return self.error(400, f"Unknown field '{key}'; did you mean '{SNAKE[key]}'?")
            if key not in FIELDS:
                return self.error(400, f"Unknown field '{key}'.")
        query, docs = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not query:
            return self.error(400, "'query' is required and must be a non-empty string.")
        if not strings(docs) or not docs:
            return self.error(400, "'documents' is required and must be a non-empty array.")
        if len(docs) > self.max_documents:
            return self.error(
                400, f"At most {self.max_documents} documents are allowed per request."
            )
        if "model" in body and body["model"] not in MODELS:
            return self.error(404, f"Model '{body['model']}' was not found.")
        for key in ("topK", "batchSize"):
            value = body.get(key)
            if value is not None and (type(value) is not int or value < 1):
                return self.error(400, f"'{key}' must be an integer of at least 1.")
        return None

    def answer(self, body: dict[str, Any]) -> web.Response:
        docs = body["documents"]
        scored = ranked(body["query"], docs)
        if body.get("sort") is False:
            scored.sort()
        if body.get("topK"):
            scored = scored[: body["topK"]]
        echo = body.get("returnDocuments", True)
        scores = [
            {"index": i, "score": s, **({"document": docs[i]} if echo else {})} for i, s in scored
        ]
        meta = {
            "tokenUsage": {"totalTokens": token_count(body["query"], *docs)},
            "latency": {"dataPreprocessTime": 0.4, "inferenceTime": 3.1, "postProcessTime": 0.1},
            "modelName": "semantic-reranker-v1",
            "modelVersion": "1.0",
        }
        return json_response(
            {"scores": scores, "meta": meta}, headers={"X-Correlation-ID": str(uuid.uuid4())}
        )


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status)
