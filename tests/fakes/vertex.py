"""A strict loopback fake of Google's Vertex AI ranking API (Discovery Engine RankService)
and of Google's OAuth token endpoint, on one server.

- `POST /token`: the JWT-bearer grant of a service account. The assertion must be an
  RS256 JWT signed by the fake's service-account key, with `kid` = the key id, `iss` =
  the account, the cloud-platform `scope`, `aud` = this endpoint, and at most an hour
  between `iat` and `exp`; else `{"error": "invalid_grant", "error_description"}`.
- `POST /v1/projects/{p}/locations/{l}/rankingConfigs/{c}:rank`: a Bearer token this fake
  issued (else 401 `UNAUTHENTICATED`); the configured project (else 403
  `PERMISSION_DENIED`), location `global` and `default_ranking_config` (else 404); proto
  JSON field names, camelCase or proto, and any other name is Google's 400 `Invalid JSON
  payload received. Unknown name "x": Cannot find field.`; at most 200 records, each
  with a title or content and a unique id (duplicates refused: UNVERIFIED); a known
  model. Scores are the Cohere fake's, rounded to two decimals (0 becomes 0.0001), the
  answer `{"records": [{id, score, title?, content?}]}` best first, with no usage.
Errors are `{"error": {code, message, status}}`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.cohere import fake_score
from tests.fakes.strict import StrictFake, json_response

PROJECT = "rerank-test-project"
ACCOUNT = "gateway@rerank-test-project.iam.gserviceaccount.com"
KEY_ID = "0123456789abcdef"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
RANK_PATH = "/v1/projects/{project}/locations/{location}/rankingConfigs/{config}:rank"
MODELS = (
    "semantic-ranker-default-004",
    "semantic-ranker-fast-004",
    "semantic-ranker-default@latest",
    "semantic-ranker-fast@latest",
    "semantic-ranker-512@latest",
    "semantic-ranker-512-003",
)
# proto3 JSON: each field by its lowerCamel or its proto name.
NAMES = {
    "model": "model",
    "topN": "top_n",
    "top_n": "top_n",
    "query": "query",
    "records": "records",
    "ignoreRecordDetailsInResponse": "ignore",
    "ignore_record_details_in_response": "ignore",
    "userLabels": "labels",
    "user_labels": "labels",
}
RECORD_FIELDS = {"id", "title", "content"}
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def vertex_score(query: str, text: str) -> float:
    """The fake's score: the Cohere fake's, rounded as Vertex rounds."""
    return max(round(fake_score(query, text), 2), 0.0001)


@dataclass
class FakeVertex(StrictFake):
    paths: tuple[str, ...] = (RANK_PATH,)
    project: str = PROJECT
    max_records: int = 200
    token_lifetime_s: int = 3599
    issued: set[str] = field(default_factory=set)
    grants: list[dict[str, Any]] = field(default_factory=list)  # verified JWT claims
    token_failures: int = 0  # answer this many grants with 503 first
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _serial: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/token", self.token)
        return app

    def service_account(self, token_uri: str, key: rsa.RSAPrivateKey | None = None) -> str:
        """A service-account key file's JSON for this fake's account."""
        pem = (key or self._key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return orjson.dumps(
            {
                "type": "service_account",
                "project_id": self.project,
                "private_key_id": KEY_ID,
                "private_key": pem.decode(),
                "client_email": ACCOUNT,
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        ).decode()

    async def token(self, request: web.Request) -> web.Response:
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        if self.token_failures > 0:
            self.token_failures -= 1
            return _grant_error(503, "temporarily_unavailable", "try again")
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _grant_error(400, "unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=str(request.url.with_query(None)),
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return _grant_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return _grant_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if header.get("kid") != KEY_ID or claims["iss"] != ACCOUNT:
            return _grant_error(400, "invalid_grant", "Invalid JWT: unknown key or account.")
        if SCOPE not in claims["scope"].split() or claims["exp"] - claims["iat"] > 3600:
            return _grant_error(400, "invalid_scope", "Invalid JWT: scope or lifetime.")
        if abs(claims["iat"] - time.time()) > 300:
            return _grant_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token")
        self.grants.append(claims)
        token = f"ya29.fake-{next(self._serial)}"
        self.issued.add(token)
        return json_response(
            {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )

    def needs_key(self, path: str) -> bool:
        return True

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and token in self.issued

    def unauthorized(self) -> web.Response:
        return self.error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
        )

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        error = {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}
        return json_response({"error": error}, status, headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        if self.authorized(request):  # the resource is judged only for a known caller
            if info["project"] != self.project:
                return self.error(403, f"Permission denied on project {info['project']}.")
            if info["location"] != "global" or info["config"] != "default_ranking_config":
                return self.error(404, "Ranking config not found.")
        return await super().handle(request)

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        for key in body:
            if key not in NAMES:
                return self.unknown_name(key)
        fields = {NAMES[k]: v for k, v in body.items()}
        if fields.get("model", "semantic-ranker-512@latest") not in MODELS:
            return self.error(400, f"Unsupported model: {fields['model']}.")
        if not isinstance(fields.get("query"), str):
            return self.error(400, "query must be a string.")
        records = fields.get("records")
        if not isinstance(records, list) or not records:
            return self.error(400, "records must not be empty.")
        if len(records) > self.max_records:
            return self.error(400, f"The number of records exceeds {self.max_records}.")
        seen = set()
        for record in records:
            if not isinstance(record, dict):
                return self.error(400, "Invalid value at 'records': not a RankingRecord.")
            for key in record:
                if key not in RECORD_FIELDS:
                    return self.unknown_name(f"records[0].{key}")
            if not record.get("title") and not record.get("content"):
                return self.error(400, "Each record must have either title or content.")
            if record.get("id") in seen:
                return self.error(400, f"Duplicate record id: {record.get('id')}.")
            seen.add(record.get("id"))
        return None

    def unknown_name(self, name: str) -> web.Response:
        message = f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"description": message}],
            }
        ]
        error = {"code": 400, "message": message, "status": "INVALID_ARGUMENT", "details": details}
        return json_response({"error": error}, 400)

    def answer(self, body: dict[str, Any]) -> web.Response:
        fields = {NAMES[k]: v for k, v in body.items()}
        query = fields["query"]
        scored = [
            (vertex_score(query, r.get("content") or r.get("title", "")), n, r)
            for n, r in enumerate(fields["records"])
        ]
        scored.sort(key=lambda t: (-t[0], t[1]))
        if fields.get("top_n", 0) > 0:
            scored = scored[: fields["top_n"]]
        ignore = fields.get("ignore", False)
        records = [
            {
                "id": r.get("id", ""),
                "score": s,
                **({} if ignore else {k: r[k] for k in ("title", "content") if k in r}),
            }
            for s, _, r in scored
        ]
        return json_response({"records": records})


def _grant_error(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status)
