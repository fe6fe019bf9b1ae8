"""A strict loopback fake of OCI Generative AI's `POST /20231130/actions/rerankText`.

Every request must carry an OCI HTTP Signature (draft-cavage, rsa-sha256) over
`date (request-target) host content-length content-type x-content-sha256`, verified
with the SDK's own `HeaderVerifier` against the public key of its keyId, plus
`x-content-sha256` = base64(sha256(received body)), a matching `content-length` and a
`date` within 5 minutes. Bodies are checked against the RerankText schema. Every
answer carries `opc-request-id`; errors are `{"code", "message"}`.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from oci._vendor.httpsig_cffi.utils import parse_authorization_header
from oci._vendor.httpsig_cffi.verify import HeaderVerifier

from tests.fakes.bedrock import rank
from tests.fakes.cohere import Faults, inject

PATH = "/20231130/actions/rerankText"
SIGNED_HEADERS = [
    "date",
    "(request-target)",
    "host",
    "content-length",
    "content-type",
    "x-content-sha256",
]
COMPARTMENT = "ocid1.compartment.oc1..aaaafakecompartment"
MAX_SKEW_S = 300
FIELDS = {
    "input",
    "documents",
    "compartmentId",
    "servingMode",
    "topN",
    "isEcho",
    "maxChunksPerDocument",
    "maxTokensPerDocument",
}
FAULT_CODES = {
    400: ("InvalidParameter", "Invalid parameter."),
    401: (
        "NotAuthenticated",
        "The required information to complete authentication was not provided or was incorrect.",
    ),
    404: ("NotAuthorizedOrNotFound", "Authorization failed or requested resource not found."),
    409: ("IncorrectState", "The resource is in a state that does not allow this operation."),
    429: ("TooManyRequests", "Too many requests for the tenancy."),
    500: ("InternalServerError", "Internal server error."),
    503: ("ServiceUnavailable", "The service is currently unavailable."),
}
NOT_AUTHENTICATED = FAULT_CODES[401][1]


@dataclass
class OciFaults(Faults):
    code: str | None = None  # error code; default from FAULT_CODES by status


def oci_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "message": message}),
        content_type="application/json",
        headers={"opc-request-id": request_id(), **(headers or {})},
    )


def request_id() -> str:
    return "/".join(uuid.uuid4().hex.upper() for _ in range(3))


@dataclass
class FakeOci:
    keys: dict[str, bytes] = field(default_factory=dict)  # keyId -> public key PEM
    compartment_id: str = COMPARTMENT
    faults: OciFaults = field(default_factory=OciFaults)
    clock: Callable[[], float] = time.time
    calls: list[dict[str, Any]] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)  # who signed each accepted request
    rejections: list[str] = field(default_factory=list)  # why requests were refused

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self.rerank_text)
        return app

    async def rerank_text(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        problem = self.authenticate(request, raw)
        if problem is not None:
            self.rejections.append(problem)
            return oci_error(401, "NotAuthenticated", NOT_AUTHENTICATED)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return oci_error(400, "CannotParseRequest", "The request body is not valid JSON.")
        refused = self.validate(body)
        if refused is not None:
            return refused
        self.calls.append(body)
        if self.faults.active():
            injected = await inject(self.faults, request, self._fault_error)
            if injected is not None:
                return injected
        ranked = rank(body["input"], body["documents"], body.get("topN"))
        ranks = []
        for index, score in ranked:
            item: dict[str, Any] = {"index": index, "relevanceScore": score}
            if body.get("isEcho"):
                item["document"] = {"text": body["documents"][index]}
            ranks.append(item)
        mode = body["servingMode"]
        payload = {
            "id": str(uuid.uuid4()),
            "modelId": mode.get("modelId", mode.get("endpointId")),
            "modelVersion": "1.0",
            "documentRanks": ranks,
        }
        return web.Response(
            body=orjson.dumps(payload),
            content_type="application/json",
            headers={"opc-request-id": request_id()},
        )

    def authenticate(self, request: web.Request, raw: bytes) -> str | None:
        """Why the signature is not acceptable, or None."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "Authorization" not in request.headers:
            return "no authorization header"
        try:
            params = parse_authorization_header(request.headers["Authorization"])[1]
        except (ValueError, IndexError):
            return "unparsable authorization header"
        key_id = params.get("keyid", "")  # the parser lower-cases parameter names
        public_key = self.keys.get(key_id)
        if public_key is None:
            return f"unknown keyId {key_id!r}"
        digest = base64.b64encode(hashlib.sha256(raw).digest()).decode()
        if request.headers.get("x-content-sha256") != digest:
            return "x-content-sha256 does not match the body"
        if request.headers.get("content-length") != str(len(raw)):
            return "content-length does not match the body"
        try:
            sent = email.utils.parsedate_to_datetime(request.headers.get("date", "")).timestamp()
        except (TypeError, ValueError):
            return "missing or invalid date header"
        if abs(self.clock() - sent) > MAX_SKEW_S:
            return "date outside the allowed clock skew"
        verifier = HeaderVerifier(
            headers,
            public_key,
            required_headers=SIGNED_HEADERS,
            method="POST",
            path=request.raw_path,
        )
        try:
            valid = verifier.verify()
        except Exception as exc:  # a required header was not signed
            return f"signature does not cover the required headers ({exc})"
        if not valid:
            return "signature mismatch"
        self.key_ids.append(key_id)
        return None

    def validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return oci_error(400, "CannotParseRequest", "The request body must be a JSON object.")
        for key in body:
            if key not in FIELDS:
                return oci_error(
                    400, "CannotParseRequest", f'Unrecognized field "{key}" in RerankTextDetails.'
                )
        for key in ("input", "documents", "compartmentId", "servingMode"):
            if key not in body:
                return oci_error(400, "MissingParameter", f"Missing required parameter: {key}.")
        docs = body["documents"]
        if (
            not isinstance(body["input"], str)
            or not isinstance(docs, list)
            or not docs
            or not all(isinstance(d, str) for d in docs)
        ):
            return oci_error(
                400,
                "InvalidParameter",
                "input must be a string and documents a non-empty list of strings.",
            )
        for key in ("topN", "maxChunksPerDocument", "maxTokensPerDocument"):
            value = body.get(key)
            if key in body and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                return oci_error(400, "InvalidParameter", f"{key} must be a positive integer.")
        if body["compartmentId"] != self.compartment_id:
            return oci_error(
                404,
                "NotAuthorizedOrNotFound",
                "Authorization failed or requested resource not found.",
            )
        mode = body["servingMode"]
        kind = mode.get("servingType") if isinstance(mode, dict) else None
        if (
            kind == "ON_DEMAND"
            and set(mode) == {"servingType", "modelId"}
            and isinstance(mode["modelId"], str)
        ):
            return None
        if (
            kind == "DEDICATED"
            and set(mode) == {"servingType", "endpointId"}
            and str(mode["endpointId"]).startswith("ocid1.generativeaiendpoint.")
        ):
            return None
        return oci_error(
            400,
            "InvalidParameter",
            "servingMode must be ON_DEMAND with modelId or DEDICATED with an endpointId.",
        )

    def _fault_error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        code, text = FAULT_CODES.get(status, ("InternalServerError", message))
        if self.faults.echo:  # the echo is the message, whatever the status
            text = message
        return oci_error(status, self.faults.code or code, text, headers)
