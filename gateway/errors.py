"""Errors as Cohere sends them: a status code and a JSON `{"id", "message"}` body.

The exceptions of request handling, and what each becomes (`gateway.http.answers.answer`
is the one function that turns any of them into a response and a log record):

    Exception
     ├── ApiError                 an answer for the caller: status, message, Retry-After;
     │    │                       the access log gets `log_message` (never caller text)
     │    ├── UpstreamUnavailable no deployment could answer: a model's `fallback` may
     │    │                       answer instead (503 outage, 504 deadline)
     │    └── MalformedHttp       aiohttp's parser refused the request (400, 431):
     │                            logged as `bad_http_request`, never its raw bytes
     ├── ProviderError            (providers.types) an upstream's failure; it never reaches
     │                            a caller as it is: `from_provider_error` maps it
     ├── aiohttp HTTPException    no route (404), method not allowed (405, with Allow),
     │                            a body past a route's cap (413): Cohere's shape
     ├── ConnectionError          the caller left while its body was read: 499, no one
     │                            to answer
     └── anything else            a gateway bug: 500 naming the request id, logged as
                                  `internal_error` with its traceback (not its text)
    BaseException
     └── Downgrade                (gateway.state.accounts) not an error: a signal from the
                                  team's account to the downgrade layer, which no
                                  `except Exception` can swallow by accident

`from_provider_error` decides what a caller sees when the upstream failed: a status
that does not invite the wrong retry and a message that says what happened upstream,
scrubbed of credentials by a `Scrubber` (the upstream's text is not ours).

An outage (`outage`: no deployment of a model could answer, every breaker open) is a
503 whose `Retry-After: 1` and `retry-after-ms: 100` make the official SDKs give up
within seconds: both retry a 503 twice and sleep for `Retry-After` (up to 60 s) first,
so the breaker's remaining cooldown there stalled a caller for a minute while it
retried into the same outage. The Python SDK reads `retry-after-ms` before
`Retry-After`; the TypeScript SDK reads whole seconds only, and takes 0 as "none
given" (then it backs off 1 s and 2 s), so 1 s is its shortest wait. The breaker's
own timing stays in the message, the log line and the metrics (docs/errors.md).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection

import orjson
from aiohttp import web

from providers.redact import REDACTED, redact
from providers.types import AUTH, MALFORMED, TIMEOUT, ProviderError

OUTAGE_RETRY_AFTER_S = 1.0
OUTAGE_RETRY_AFTER_MS = 100
MAX_UPSTREAM_MESSAGE = 600  # characters of a provider's message a caller may read
_WORD = re.compile(r"[^\s\"'`<>()\[\]{},;]{8,}")


class Scrubber:
    """What of a provider's message a caller may read.

    `providers.redact` has already taken out what the provider sent and what looks like a
    credential; this does it again for messages built elsewhere, and takes out the
    gateway's own keys: the config holds only their digests, so every word long enough to
    be a key is hashed and looked up (on error paths only: a message is a few dozen words).
    API keys (`rgk_…`) and generated keys (`rg_…`) are caught by their form.
    """

    def __init__(self, key_digests: Collection[str] = (), limit: int = MAX_UPSTREAM_MESSAGE):
        self.key_digests = frozenset(key_digests)
        self.limit = limit

    def __call__(self, text: str) -> str:
        if self.key_digests:
            for word in set(_WORD.findall(text)):
                for candidate in (word, word.rstrip(".:!?")):
                    if _digest(candidate) in self.key_digests:
                        text = text.replace(candidate, REDACTED)
        return redact(text, limit=self.limit)


def _digest(word: str) -> str:
    return hashlib.sha256(word.encode("utf-8", "surrogateescape")).hexdigest()


SCRUB_PATTERNS = Scrubber()  # when no key digests are at hand: the patterns alone


class ApiError(Exception):
    """`message` goes to the caller; `log_message` (default: the same) to the access log,
    for messages that quote text the gateway does not control."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        log_message: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.retry_after_ms = retry_after_ms  # the `retry-after-ms` header (Python SDK)
        self.log_message = message if log_message is None else log_message


class UpstreamUnavailable(ApiError):
    """No deployment of the model could answer (not the caller's fault): the error a
    model's `fallback` may replace with a degraded answer."""


class MalformedHttp(ApiError):
    """A request aiohttp's parser refused: `reason` is a fixed description (never the raw
    bytes, which can hold an Authorization header), `cause` the parser error's class."""

    def __init__(self, status: int, message: str, reason: str, cause: str | None) -> None:
        super().__init__(status, message)
        self.reason = reason
        self.cause = cause


def client_gone() -> ApiError:
    """The caller closed the connection before its request arrived whole: not the
    gateway's failure (no 5xx), and no one to answer. 499 as Nginx logs it."""
    return ApiError(499, "the client closed the connection before its request body arrived")


def internal_error(request_id: str) -> ApiError:
    """A gateway bug, as the caller sees it: the id that finds it in the logs."""
    return ApiError(
        500,
        f"internal error in the gateway; the operators can find it by request id {request_id}",
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"invalid request: {message}")


def outage(message: str, log_message: str | None = None) -> ApiError:
    """No deployment of a model can answer now: a short Retry-After, so clients fail
    fast (a model's or team's `fallback` may answer instead)."""
    return UpstreamUnavailable(
        503,
        message,
        retry_after_s=OUTAGE_RETRY_AFTER_S,
        retry_after_ms=OUTAGE_RETRY_AFTER_MS,
        log_message=log_message,
    )


def spans_unsupported(model: str) -> ApiError:
    return bad_request(
        f"model '{model}' cannot return relevant_spans: none of its deployments supports them "
        "(Rerank v5 and newer on Cohere's API do); leave relevant_spans out or set its mode "
        "to disabled"
    )


def error_response(error: ApiError, request_id: str) -> web.Response:
    """The error in Cohere's shape. Its `id` is the request id: the one in the
    X-Request-Id header and in every log line of the request, so the id an SDK shows
    is the one to search the logs for."""
    body = orjson.dumps({"id": request_id, "message": _encodable(error.message)})
    headers = {"X-Request-Id": request_id, **wait_headers(error)}
    return web.Response(
        body=body, status=error.status, content_type="application/json", headers=headers
    )


def wait_headers(error: ApiError) -> dict[str, str]:
    """`Retry-After` (and the Python SDK's `retry-after-ms`) when the error says to wait."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = retry_after(error.retry_after_s)
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = str(error.retry_after_ms)
    return headers


def retry_after(seconds: float) -> str:
    """A wait as the Retry-After header says it: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _encodable(text: str) -> str:
    # orjson refuses lone surrogates (undecodable header or path bytes kept by aiohttp).
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def from_provider_error(
    model: str,
    error: ProviderError,
    attempts: int = 1,
    deployment: str | None = None,
    scrub: Scrubber = SCRUB_PATTERNS,
) -> ApiError:
    """What the caller sees when no deployment of `model` could answer (`deployment`
    names the one that failed last); the provider's message goes through `scrub`."""
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    message = scrub(error.message)
    prefix = f"model {model!r} is unavailable{tried}: {message}"
    # The upstream's message can echo the caller's query or documents: the caller sees
    # it, the access log gets only its bounded facts.
    upstream = f"upstream {error.kind}, status {error.status}, code {error.code}"
    logged = f"model {model!r} is unavailable{tried}: {upstream}"
    if error.kind == AUTH or error.status == 404:
        # The gateway's credentials or upstream model id are wrong: our problem, not
        # the caller's, and retrying will not fix it soon.
        where = f"deployment {deployment!r}: " if deployment else ""
        note = f" ({where}a gateway configuration problem; the operators are told)"
        return ApiError(502, prefix + note, log_message=logged + note)
    if error.kind == TIMEOUT:
        return ApiError(504, prefix, log_message=logged)
    if error.kind == MALFORMED:
        return ApiError(502, prefix, log_message=logged)
    if error.status is not None and not error.retryable:
        # The upstream rejected the request itself (e.g. a document it will not take).
        status = error.status if 400 <= error.status < 500 else 502
        return ApiError(
            status,
            f"the upstream rejected the request: {message}",
            log_message=f"the upstream rejected the request: {upstream}",
        )
    retry_after = error.retry_after_s if error.retry_after_s is not None else 1.0
    if error.status == 429:
        # Every deployment is throttling: the caller should slow down, as with Cohere.
        return ApiError(429, prefix, retry_after_s=retry_after, log_message=logged)
    if error.retry_after_s is not None:  # the upstream's own wait: for the operators
        logged += f"; upstream Retry-After {error.retry_after_s:g} s"
    return outage(prefix, logged)
