"""The one place an exception becomes the caller's answer and the log's record.

Every route's error ends here: the rerank pipeline's (which also writes the access-log
line, so it takes the text for it back), the edge middleware's (admin, status and every
other route, aiohttp's routing errors) and the protocol handler's (HTTP aiohttp could not
parse, a handler that timed out). The tree of what is raised, and what each kind becomes,
is drawn at the top of `gateway.errors`.

A gateway bug is logged by where it failed (its class and traceback), never by what it
said: an exception's text may hold caller data.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import ApiError, MalformedHttp, client_gone, error_response, internal_error
from gateway.observe.logs import log


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """The response for the caller, and what the access log says of it."""

    response: web.Response
    status: int
    logged: str  # the access log's `error`: never text the gateway does not control


def answer(exc: Exception, request_id: str, path: str | None = None) -> ErrorAnswer:
    """Map `exc` to Cohere's `{"id", "message"}` answer (`path`: the route asked for, named
    by a 404) and write its log record: `internal_error` for a bug, `bad_http_request` for
    malformed HTTP; an `ApiError` needs none beyond the access log."""
    if isinstance(exc, ApiError):
        error = exc
        if isinstance(exc, MalformedHttp):
            log.warning(
                "bad_http_request",
                request_id=request_id,
                status=exc.status,
                error=exc.cause,
                reason=exc.reason,
            )
    elif isinstance(exc, web.HTTPException):
        error = _routing_error(exc, path)
    elif isinstance(exc, ConnectionError):  # the caller left while its body was being read
        error = client_gone()
    else:
        log.error(
            "internal_error",
            request_id=request_id,
            error=exc.__class__.__name__,
            traceback="".join(traceback.format_tb(exc.__traceback__)),
        )
        response = error_response(internal_error(request_id), request_id)
        return ErrorAnswer(response, 500, f"internal error ({exc.__class__.__name__})")
    response = error_response(error, request_id)
    if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 says what is allowed
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    return ErrorAnswer(response, error.status, error.log_message)


# A route other than rerank takes at most this many bytes (gateway.http.edge.guard_body).
SMALL_BODY_BYTES = 64 * 1024


def small_body_too_large() -> ApiError:
    return ApiError(
        413, f"request body too large: this route takes at most {SMALL_BODY_BYTES} bytes"
    )


def _routing_error(exc: web.HTTPException, path: str | None) -> ApiError:
    """aiohttp's own refusals (no route, method not allowed, a small route's body past its
    cap), worded for a caller of this API instead of aiohttp's text pages."""
    message = {
        404: f"no route {path}; use POST /v2/rerank",
        413: small_body_too_large().message,  # read past guard_body's cap
    }.get(exc.status, exc.reason)
    return ApiError(exc.status, message)
