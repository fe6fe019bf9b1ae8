"""Bearer tokens from an OAuth 2 token endpoint, kept until shortly before they expire.

Google service accounts (a signed JWT grant, providers/google_auth.py) and Microsoft
Entra ID (client credentials) both trade a form POST for `{"access_token", "expires_in"}`.
One `TokenSource` per provider fetches a token on first use, shares it between
concurrent calls (one fetch at a time), and fetches the next one `refresh_margin_s`
before the current one expires. A refusal by the token endpoint (bad key, unknown
client) is a configuration problem: it is remembered for `RETRY_S`, so a refused
deployment does not send every request to the token endpoint, and fails like refused
credentials (AUTH), which moves requests to the model's other deployments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

from providers.credentials import RETRY_S, auth_error
from providers.http import HttpResponse, HttpTransport, parse_retry_after
from providers.redact import redact
from providers.types import AUTH, STATUS, ProviderError

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


class TokenSource:
    """A cached access token from `url`; `form()` builds each grant request body."""

    def __init__(
        self,
        label: str,
        transport: HttpTransport,
        url: str,
        form: Callable[[], bytes],
        *,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label  # the provider's name, for messages
        self.url = url
        self._transport = transport
        self._form = form
        self._margin = refresh_margin_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._refused: ProviderError | None = None
        self._refused_until = 0.0

    async def token(self, timeout_s: float) -> str:
        """A token valid for at least the refresh margin (or until it expires)."""
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:  # concurrent callers wait for one fetch
            if not self._fresh():
                await self._fetch(timeout_s)
            assert self._token is not None
            return self._token

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires - self._margin

    async def _fetch(self, timeout_s: float) -> None:
        now = self._clock()
        if self._refused is not None and now < self._refused_until:
            raise self._refused
        # The form is built here (a JWT grant is signed with the current time).
        form = self._form()
        resp = await self._transport.post(self.url, form, FORM, timeout_s)
        if resp.status >= 400:
            error = token_error(self.label, resp, _form_values(form))
            if not error.retryable:
                self._refused, self._refused_until = error, now + RETRY_S
            raise error
        token, lifetime = _read_token(self.label, resp)
        self._token, self._expires = token, now + lifetime
        self._refused = None


def _read_token(label: str, resp: HttpResponse) -> tuple[str, float]:
    try:
        data: Any = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        data = None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise auth_error(label, "the token endpoint answered without an access_token")
    lifetime = data.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():  # Entra's v1 endpoint sends strings
        lifetime = int(lifetime)
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = 3600.0  # both issuers' usual lifetime, when the answer omits it
    return token, float(lifetime)


def _form_values(form: bytes) -> list[str]:
    """The values of a grant's form (a client secret, a signed assertion): what an echo of
    the request would quote."""
    return [v for values in parse_qs(form.decode()).values() for v in values]


def token_error(label: str, resp: HttpResponse, sent: Iterable[str] = ()) -> ProviderError:
    """OAuth's `{"error", "error_description"}`: refusals are AUTH, throttling and server
    errors may pass on another try. The text is scrubbed of what the grant `sent`."""
    code, description = None, None
    try:
        data = orjson.loads(resp.body[:4096])
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error, text = data.get("error"), data.get("error_description")
        code = redact(error, sent, 64) if isinstance(error, str) else None
        # Only the first line: Entra appends trace and correlation ids on later lines.
        lines = text.strip().splitlines() if isinstance(text, str) else []
        description = redact(lines[0], sent) if lines else None
    detail = f": {description}" if description else ""
    passes = resp.status == 429 or resp.status >= 500  # the endpoint's own trouble
    return ProviderError(
        f"{label}: the token endpoint answered {resp.status}{f' {code}' if code else ''}{detail}",
        kind=STATUS if passes else AUTH,
        retryable=passes,
        status=resp.status if passes else None,  # a refusal is not the caller's 4xx
        code=code,
        retry_after_s=parse_retry_after(resp.headers),
    )
