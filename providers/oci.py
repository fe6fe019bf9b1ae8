"""OCI Generative AI: Cohere Rerank through `POST /20231130/actions/rerankText`.

Requests are signed with the `oci` SDK's own signers (OCI HTTP Signature, rsa-sha256
over date, request target, host, content length and type, and the body's SHA-256): the
signer sees the exact bytes that are then sent, with our own `content-length`. OCI
reports no usage, so `search_units` is None and the gateway estimates it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import oci
import orjson

from providers.credentials import LazyCredential
from providers.extra_options import OciOptions
from providers.http import (
    HttpResponse,
    HttpTransport,
    load_json,
    scores_from_ranks,
    status_error,
)
from providers.types import AUTH, ProviderError, UpstreamCall, UpstreamResult

API_PATH = "/20231130/actions/rerankText"
_DEDICATED_PREFIX = "ocid1.generativeaiendpoint."
# 404 NotAuthorizedOrNotFound is how OCI answers a missing IAM policy: our configuration.
_AUTH_CODES = frozenset({"NotAuthenticated", "NotAuthorizedOrNotFound"})
# Tenancy limits and quotas are not the caller's fault: try another deployment.
_RETRYABLE_CODES = frozenset({"LimitExceeded", "QuotaExceeded"})



class _Signable:
    """The request interface oci's signers read (that of `requests.PreparedRequest`).

    Header names are lower-case, as the signer adds its own; `content-length` is set here
    because the signer only sets it for str bodies.
    """

    __slots__ = ("body", "headers", "method", "path_url", "url")

    def __init__(self, url: str, path_url: str, body: bytes) -> None:
        self.method = "POST"
        self.url = url
        self.path_url = path_url
        self.body = body
        self.headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "content-length": str(len(body)),
        }


class OciProvider:
    """The `oci` provider type."""

    type = "oci"
    batch_relative = False

    def __init__(self, name: str, options: OciOptions) -> None:
        self.name = name
        self.options = options
        self.url = options.endpoint() + API_PATH
        self.path_url = urlsplit(self.url).path
        self.transport = HttpTransport(name, options.max_connections)
        self.signer: LazyCredential[Any] = LazyCredential(
            name, "OCI credentials", signer_loader(options)
        )
        # Principal signers refresh their token inside the call, over the network.
        self._sign_in_thread = options.auth in ("instance_principal", "resource_principal")

    async def start(self) -> None:
        await self.transport.start()
        await self.signer.start()

    async def close(self) -> None:
        await self.transport.close()

    def serving_mode(self, model: str) -> dict[str, str]:
        if model.startswith(_DEDICATED_PREFIX):
            return {"servingType": "DEDICATED", "endpointId": model}
        if self.options.serving_mode == "dedicated":
            assert self.options.endpoint_id is not None
            return {"servingType": "DEDICATED", "endpointId": self.options.endpoint_id}
        return {"servingType": "ON_DEMAND", "modelId": model}

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input": call.query,
            "documents": list(call.documents),
            "compartmentId": self.options.compartment_id,
            "servingMode": self.serving_mode(call.model),
        }
        if call.max_tokens_per_doc is not None:
            body["maxTokensPerDocument"] = call.max_tokens_per_doc
        return body

    async def sign(self, data: bytes) -> dict[str, str]:
        signer = await self.signer.get()
        request = _Signable(self.url, self.path_url, data)
        if self._sign_in_thread:
            await asyncio.to_thread(signer, request)
        else:
            signer(request)
        return request.headers

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        data = orjson.dumps(self.body(call))
        headers = await self.sign(data)
        timeout = min(self.options.timeout_s, call.timeout_s)
        resp = await self.transport.post(self.url, data, headers, timeout, call.trace_headers)
        if resp.status >= 400:
            raise self.error(resp)
        payload = load_json(self.name, resp)
        ranks = payload.get("documentRanks") if isinstance(payload, dict) else None
        scores = scores_from_ranks(
            self.name, ranks, len(call.documents), score_key="relevanceScore", resp=resp
        )
        return UpstreamResult(scores, search_units=None, upstream_request_id=resp.request_id)

    def error(self, resp: HttpResponse) -> ProviderError:
        code = _body_code(resp)
        if code in _AUTH_CODES:
            return status_error(self.name, resp, kind=AUTH, retryable=False)
        if code in _RETRYABLE_CODES:
            return status_error(self.name, resp, retryable=True)
        return status_error(self.name, resp)


def _body_code(resp: HttpResponse) -> str | None:
    try:
        data = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def signer_loader(options: OciOptions) -> Callable[[], Any]:
    """How to build the signer; called in a thread at start (principals use the network)."""
    if options.auth == "instance_principal":
        return oci.auth.signers.InstancePrincipalsSecurityTokenSigner
    if options.auth == "resource_principal":
        return oci.auth.signers.get_resource_principals_signer
    if options.auth == "api_key":
        return lambda: oci.signer.Signer(
            options.tenancy,
            options.user,
            options.fingerprint,
            private_key_file_location=options.private_key_file,
            pass_phrase=options.pass_phrase,
            private_key_content=options.private_key,
        )
    return lambda: config_file_signer(options.config_file, options.profile)


def config_file_signer(path: str, profile: str) -> Any:
    """The signer the OCI CLI would use for this profile: API key or session token."""
    config = oci.config.from_file(os.path.expanduser(path), profile)
    token_file = config.get("security_token_file")
    if token_file:
        with open(os.path.expanduser(token_file), encoding="ascii") as f:
            token = f.read().strip()
        key = oci.signer.load_private_key_from_file(config["key_file"], config.get("pass_phrase"))
        return oci.auth.signers.SecurityTokenSigner(token, key)
    return oci.signer.Signer.from_config(config)
