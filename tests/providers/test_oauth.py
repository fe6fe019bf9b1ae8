"""The OAuth token source (providers/oauth.py) against the Entra token fake, on a test
clock: one fetch for concurrent callers, reuse until the refresh margin, a refusal
remembered for a while, an outage not remembered."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from providers.http import HttpResponse, HttpTransport
from providers.oauth import TokenSource, _form_values, token_error
from providers.types import AUTH, STATUS, ProviderError
from tests.fakes.azure_semantic import CLIENT_ID, CLIENT_SECRET, SCOPE, TENANT, FakeAzureSemantic
from tests.fakes.clock import FakeClock
from tests.support.servers import ServerLoop


def grant(secret: str = CLIENT_SECRET) -> bytes:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": SCOPE}
    return urlencode({**form, "client_secret": secret}).encode()


def test_tokens_are_shared_reused_and_renewed_before_expiry(servers: ServerLoop) -> None:
    fake = FakeAzureSemantic(token_lifetime_s=3600)
    url = servers.serve(fake.app()) + f"/{TENANT}/oauth2/v2.0/token"
    clock = FakeClock()

    async def run() -> list[str]:
        transport = HttpTransport("az")
        tokens = TokenSource("az", transport, url, grant, refresh_margin_s=300, clock=clock)
        try:
            seen = list(await asyncio.gather(*(tokens.token(5) for _ in range(5))))
            clock.advance(3299)  # 301 s left: still outside the margin
            seen.append(await tokens.token(5))
            clock.advance(2)  # 299 s left: renewed ahead of expiry
            seen.append(await tokens.token(5))
            return seen
        finally:
            await transport.close()

    seen = servers.run(run())
    assert seen == ["entra-token-0"] * 6 + ["entra-token-1"]
    assert fake.token_requests == 2


def test_a_refusal_is_remembered_and_an_outage_is_not(servers: ServerLoop) -> None:
    fake = FakeAzureSemantic()
    url = servers.serve(fake.app()) + f"/{TENANT}/oauth2/v2.0/token"
    clock = FakeClock()
    secret = ["wrong"]

    async def run() -> list[ProviderError | str]:
        transport = HttpTransport("az")
        tokens = TokenSource("az", transport, url, lambda: grant(secret[0]), clock=clock)
        outcomes: list[ProviderError | str] = []

        async def attempt() -> None:
            try:
                outcomes.append(await tokens.token(5))
            except ProviderError as exc:
                outcomes.append(exc)

        try:
            await attempt()
            secret[0] = CLIENT_SECRET  # fixed, but the refusal stands for 30 s
            await attempt()
            clock.advance(31)
            await attempt()
            return outcomes
        finally:
            await transport.close()

    refused, remembered, fixed = servers.run(run())
    assert isinstance(refused, ProviderError) and remembered is refused
    assert (refused.kind, refused.retryable, refused.status) == (AUTH, False, None)
    assert fixed == "entra-token-0"
    assert fake.token_requests == 2


def test_an_outage_of_the_token_endpoint_may_pass() -> None:
    body = b'{"error": "temporarily_unavailable", "error_description": "busy\\nTrace ID: 1"}'
    resp = HttpResponse(503, CIMultiDictProxy(CIMultiDict({"Retry-After": "3"})), body)
    error = token_error("gcp", resp)
    assert (error.kind, error.retryable, error.status) == (STATUS, True, 503)
    assert error.retry_after_s == 3.0
    assert error.message == "gcp: the token endpoint answered 503 temporarily_unavailable: busy"


@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"access_token": ""}'])
def test_an_answer_without_a_token_is_an_auth_failure(servers: ServerLoop, body: bytes) -> None:
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_post("/token", answer)
    url = servers.serve(app) + "/token"

    async def run() -> None:
        transport = HttpTransport("x")
        try:
            await TokenSource("x", transport, url, lambda: b"").token(5)
        finally:
            await transport.close()

    with pytest.raises(ProviderError) as info:
        servers.run(run())
    assert info.value.kind == AUTH
    assert "the token endpoint answered without an access_token" in info.value.message


def test_a_token_endpoint_echoing_the_grant_is_scrubbed() -> None:
    body = b'{"error": "invalid_client", "error_description": "bad secret s3cr3t-client-value"}'
    resp = HttpResponse(401, CIMultiDictProxy(CIMultiDict()), body)
    assert "s3cr3t-client-value" in token_error("az", resp).message  # not credential-shaped
    error = token_error("az", resp, _form_values(grant("s3cr3t-client-value")))
    assert error.message == "az: the token endpoint answered 401 invalid_client: bad secret [redacted]"
