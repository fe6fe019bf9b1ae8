"""A strict loopback fake of AWS Bedrock's rerank surfaces.

- `POST /model/{modelId}/invoke` (bedrock-runtime InvokeModel) with Cohere Rerank's
  strict body schema: `query`, `documents`, `api_version >= 2`, optional `top_n`; any
  other key is refused as Bedrock does ("Malformed input request: #: extraneous key [x]
  is not permitted, please reformat your input and try again.").
- `POST /rerank` (bedrock-agent-runtime Rerank) with its queries/sources shape.

Every request must carry a SigV4 signature that botocore recomputes over the RAW path
(`request.raw_path`), the signed headers as received and the received body; scope
service `bedrock`, the fake's region and X-Amz-Date within 5 minutes are enforced.
InvokeModel also takes a Bedrock API key as Bearer. Errors are AWS's: status,
`x-amzn-ErrorType`, `x-amzn-RequestId` and `{"message"}`. Faults as in the Cohere fake.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.cohere import Faults, fake_score, inject

ACCESS_KEY = "AKIDFAKEBEDROCK00001"
SECRET_KEY = "fake-bedrock-secret-key/0123456789abcdefgh"
API_KEY = "bedrock-api-key-fake"
MAX_SKEW = dt.timedelta(minutes=5)

# Defaults for injected faults: the error names and texts Bedrock uses for each status.
FAULT_ERRORS = {
    400: (
        "ValidationException",
        "Malformed input request, please reformat your input and try again.",
    ),
    403: (
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    404: (
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    408: (
        "ModelTimeoutException",
        "Model has timed out in processing the request. Try your request again.",
    ),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
INVOKE_KEYS = {"query", "documents", "top_n", "api_version"}
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
_INVOKE_PATH = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")


@dataclass
class AwsFaults(Faults):
    code: str | None = None  # x-amzn-ErrorType name; default from FAULT_ERRORS by status


def aws_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
            **(headers or {}),
        },
    )


def malformed(violations: list[str]) -> web.Response:
    message = "Malformed input request: " + "".join(violations)
    return aws_error(
        400, "ValidationException", message + ", please reformat your input and try again."
    )


@dataclass
class FakeBedrock:
    region: str = "us-east-1"
    secrets: dict[str, str] = field(default_factory=lambda: {ACCESS_KEY: SECRET_KEY})
    tokens: dict[str, str] = field(default_factory=dict)  # access key -> required session token
    api_keys: set[str] = field(default_factory=lambda: {API_KEY})
    accept_max_tokens_per_doc: bool = False  # unverified upstream; off = strict
    faults: AwsFaults = field(default_factory=AwsFaults)
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    calls: list[dict[str, Any]] = field(default_factory=list)
    raw_paths: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # InvokeModel ids, decoded
    access_keys: list[str] = field(default_factory=list)  # who signed each accepted request

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/rerank", self.rerank)
        app.router.add_post("/{tail:.*}", self.invoke)
        return app

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        match = _INVOKE_PATH.match(request.raw_path)
        if match is None:
            return aws_error(404, "UnknownOperationException", "")
        raw = await request.read()
        refused = self.authenticate(request, raw, bearer_ok=True)
        if refused is not None:
            return refused
        body = self._json(raw)
        violations = invoke_violations(body, self.accept_max_tokens_per_doc)
        if violations:
            return malformed(violations)
        self.models.append(unquote(match["model"]))
        self._record(request, body)
        injected = await self._faults(request)
        if injected is not None:
            return injected
        ranked = rank(body["query"], body["documents"], body.get("top_n"))
        results = [{"index": i, "relevance_score": s} for i, s in ranked]
        return self._ok({"id": str(uuid.uuid4()), "results": results})

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refused = self.authenticate(request, raw, bearer_ok=False)
        if refused is not None:
            return refused
        body = self._json(raw)
        problem = rerank_problem(body)
        if problem:
            return aws_error(400, "ValidationException", problem)
        self._record(request, body)
        injected = await self._faults(request)
        if injected is not None:
            return injected
        config = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
        texts = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
        query = body["queries"][0]["textQuery"]["text"]
        ranked = rank(query, texts, config.get("numberOfResults"))
        return self._ok({"results": [{"index": i, "relevanceScore": s} for i, s in ranked]})

    # -- authentication -------------------------------------------------------------

    def authenticate(
        self, request: web.Request, raw: bytes, bearer_ok: bool
    ) -> web.Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        if header.startswith("Bearer ") and bearer_ok:
            if header[7:] in self.api_keys:
                return None
            return aws_error(
                403,
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix",
            )
        match = _AUTH_RE.fullmatch(header)
        if match is None:
            return aws_error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential' parameter. Authorization header "
                "requires 'Signature' parameter. Authorization header requires 'SignedHeaders' "
                "parameter.",
            )
        return self._verify_sigv4(request, raw, match)

    def _verify_sigv4(
        self, request: web.Request, raw: bytes, m: re.Match[str]
    ) -> web.Response | None:
        secret = self.secrets.get(m["akid"])
        token = request.headers.get("X-Amz-Security-Token")
        if secret is None or self.tokens.get(m["akid"]) != token:
            return aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if m["service"] != "bedrock":
            return invalid_signature("Credential should be scoped to correct service: 'bedrock'. ")
        if m["region"] != self.region:
            return invalid_signature(
                f"Credential should be scoped to a valid region, not '{m['region']}'. "
            )
        signed = m["signed"].split(";")
        if not {"host", "x-amz-date"} <= set(signed) or (
            token and "x-amz-security-token" not in signed
        ):
            return invalid_signature("Host, X-Amz-Date and X-Amz-Security-Token must be signed.")
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return invalid_signature("Date must be in ISO-8601 'basic format'.")
        if amz_date[:8] != m["date"]:
            return invalid_signature(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{m['date']}' != '{amz_date[:8]}'"
            )
        now = self.now()
        if when < now - MAX_SKEW:
            return invalid_signature(
                f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW):%Y%m%dT%H%M%SZ} ({now:%Y%m%dT%H%M%SZ} - 5 min.)"
            )
        if when > now + MAX_SKEW:
            return invalid_signature(
                f"Signature not yet current: {amz_date} is still later than {(now + MAX_SKEW):%Y%m%dT%H%M%SZ} ({now:%Y%m%dT%H%M%SZ} + 5 min.)"
            )
        # Rebuild the request from what arrived: raw path, signed headers, raw body.
        aws = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['Host']}{request.raw_path}",
            headers={h: request.headers.get(h, "") for h in signed},
            data=raw,
        )
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(m["akid"], secret, token), m["service"], m["region"])
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        if not hmac.compare_digest(expected, m["signature"]):
            # AWS's own text, canonical request included (it holds the security token).
            return invalid_signature(
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.\n\nThe Canonical String for this request "
                f"should have been\n'{canonical}'\n"
            )
        self.access_keys.append(m["akid"])
        return None

    # -- helpers --------------------------------------------------------------------

    def _json(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.calls.append(body)
        self.raw_paths.append(request.raw_path)

    async def _faults(self, request: web.Request) -> web.StreamResponse | None:
        if not self.faults.active():
            return None
        return await inject(self.faults, request, self._fault_error)

    def _fault_error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        code, text = FAULT_ERRORS.get(status, ("InternalServerException", message))
        if self.faults.echo:  # the echo is the message, whatever the status
            text = message
        return aws_error(status, self.faults.code or code, text, headers)

    def _ok(self, payload: dict[str, Any]) -> web.Response:
        return web.Response(
            body=orjson.dumps(payload),
            content_type="application/json",
            headers={
                "x-amzn-RequestId": str(uuid.uuid4()),
                "X-Amzn-Bedrock-Invocation-Latency": "42",
            },
        )


def invalid_signature(message: str) -> web.Response:
    return aws_error(403, "InvalidSignatureException", message)


def rank(query: str, documents: list[str], top_n: int | None) -> list[tuple[int, float]]:
    scored = sorted(
        ((i, fake_score(query, d)) for i, d in enumerate(documents)), key=lambda p: (-p[1], p[0])
    )
    return scored[:top_n] if top_n is not None else scored


def _json_type(value: Any) -> str:
    names = {
        str: "String",
        bool: "Boolean",
        int: "Integer",
        float: "BigDecimal",
        list: "JSONArray",
        dict: "JSONObject",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def invoke_violations(body: Any, accept_max_tokens_per_doc: bool) -> list[str]:
    """What Bedrock's JSON-schema validation says about a Cohere Rerank InvokeModel body."""
    if not isinstance(body, dict):
        return [f"#: expected type: JSONObject, found: {_json_type(body)}"]
    allowed = INVOKE_KEYS | ({"max_tokens_per_doc"} if accept_max_tokens_per_doc else set())
    out = [
        f"#: required key [{k}] not found"
        for k in ("query", "documents", "api_version")
        if k not in body
    ]
    out += [f"#: extraneous key [{k}] is not permitted" for k in body if k not in allowed]
    if "query" in body and not isinstance(body["query"], str):
        out.append(f"#/query: expected type: String, found: {_json_type(body['query'])}")
    docs = body.get("documents")
    if "documents" in body:
        if not isinstance(docs, list):
            out.append(f"#/documents: expected type: JSONArray, found: {_json_type(docs)}")
        elif not 1 <= len(docs) <= 1000:
            bound = "minimum item count: 1" if not docs else "maximum item count: 1000"
            out.append(f"#/documents: expected {bound}, found: {len(docs)}")
        else:
            out += [
                f"#/documents/{i}: expected type: String, found: {_json_type(d)}"
                for i, d in enumerate(docs)
                if not isinstance(d, str)
            ]
    for key, low in (("api_version", 2), ("top_n", 1), ("max_tokens_per_doc", 1)):
        value = body.get(key)
        if key not in body:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"#/{key}: expected type: Integer, found: {_json_type(value)}")
        elif value < low:
            out.append(f"#/{key}: {value} is not greater or equal to {low}")
    return out


def rerank_problem(body: Any) -> str | None:
    """Bedrock agent-runtime's validation of a Rerank body (first problem), or None."""

    def bad(where: str, constraint: str, value: Any = None) -> str:
        return f"1 validation error detected: Value {value!r} at '{where}' failed to satisfy constraint: {constraint}"

    if not isinstance(body, dict):
        return "Could not parse request body into json."
    extra = set(body) - {"queries", "sources", "rerankingConfiguration", "nextToken"}
    if extra:
        return f"Unrecognized field(s) {sorted(extra)} in the request."
    queries, sources = body.get("queries"), body.get("sources")
    if not isinstance(queries, list) or len(queries) != 1:
        return bad(
            "queries",
            "Member must have length less than or equal to 1 and greater than or equal to 1",
        )
    q = queries[0]
    if (
        not isinstance(q, dict)
        or q.get("type") != "TEXT"
        or not isinstance((q.get("textQuery") or {}).get("text"), str)
    ):
        return bad("queries.1.member.textQuery.text", "Member must not be null")
    if not isinstance(sources, list) or not 1 <= len(sources) <= 1000:
        return bad(
            "sources",
            "Member must have length less than or equal to 1000 and greater than or equal to 1",
        )
    for i, s in enumerate(sources, 1):
        inline = s.get("inlineDocumentSource") if isinstance(s, dict) else None
        text = ((inline or {}).get("textDocument") or {}).get("text")
        if (
            s.get("type") != "INLINE"
            or (inline or {}).get("type") != "TEXT"
            or not isinstance(text, str)
        ):
            return bad(
                f"sources.{i}.member.inlineDocumentSource.textDocument.text",
                "Member must not be null",
            )
        if not 1 <= len(text) <= 32000:
            return bad(
                f"sources.{i}.member.inlineDocumentSource.textDocument.text",
                "Member must have length less than or equal to 32000 and greater than or equal to 1",
                "***",
            )
    config = body.get("rerankingConfiguration")
    if not isinstance(config, dict) or config.get("type") != "BEDROCK_RERANKING_MODEL":
        return bad(
            "rerankingConfiguration.type",
            "Member must satisfy enum value set: [BEDROCK_RERANKING_MODEL]",
        )
    inner = config.get("bedrockRerankingConfiguration") or {}
    model = (inner.get("modelConfiguration") or {}).get("modelArn")
    if not isinstance(model, str) or not model:
        return bad(
            "rerankingConfiguration.bedrockRerankingConfiguration.modelConfiguration.modelArn",
            "Member must not be null",
        )
    count = inner.get("numberOfResults")
    if count is not None and (not isinstance(count, int) or not 1 <= count <= 1000):
        return bad(
            "rerankingConfiguration.bedrockRerankingConfiguration.numberOfResults",
            "Member must have value less than or equal to 1000 and greater than or equal to 1",
            count,
        )
    return None
