"""The HTTP edge, around every route: one request id per request, and answers in
Cohere's JSON shape also where aiohttp itself would answer in plain text.

Request ids: a caller's valid `X-Request-Id` is used as is, otherwise a new uuid; it is
the error body's `id`, the `X-Request-Id` header and the `request_id` of every log line
of the request (bound with structlog's contextvars), so the id an SDK shows finds the
request in the logs.

Malformed HTTP (a control character in a header, an oversized header line, a body whose
framing or Content-Encoding cannot be decoded) is rejected by aiohttp's parser before any
route runs. `GatewayRunner` serves the app with a protocol handler whose error answer is
Cohere's `{"id", "message"}` with `Connection: close`, and whose log line names the
parser error's class and its fixed description, never the raw bytes (which can hold an
Authorization header). What cannot change: aiohttp closes the connection after such an
error, and a request it cannot parse at all has no headers, so no caller id.
"""

from __future__ import annotations

import re
import traceback
import uuid
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler

from gateway.errors import ApiError, bad_request, error_response
from gateway.observe.logs import log

REQUEST_ID = web.RequestKey("request_id", str)
# Set by a handler whose request left the connection unusable (an undecodable body).
CLOSE_CONNECTION = web.RequestKey("close_connection", bool)
_VALID_ID = re.compile(r"[!-~]{1,128}")  # visible ASCII: safe in a header, a log and JSON
ACCEPTED_ENCODINGS = ("identity", "gzip", "deflate", "br", "zstd")


def caller_request_id(request: web.BaseRequest) -> str | None:
    given = request.headers.get("X-Request-Id", "").strip()
    return given if _VALID_ID.fullmatch(given) else None


def request_id(request: web.Request) -> str:
    """The id of this request (assigned by `middleware`; a fresh one outside it)."""
    found = request.get(REQUEST_ID)
    if found is None:
        found = request[REQUEST_ID] = caller_request_id(request) or str(uuid.uuid4())
    return found


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Assign the request id, bind it to every log line, and turn every error outside the
    rerank pipeline (which answers its own, for its access log) into a response in
    Cohere's shape: `ApiError`s of the admin and other routes, routing errors (404, 405)
    instead of aiohttp's text pages, and gateway bugs."""
    rid = request_id(request)
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc, rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {404: f"no route {request.path}; use POST /v2/rerank"}.get(
                exc.status, exc.reason
            )
            response = error_response(ApiError(exc.status, message), rid)
            if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 says what is
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        except Exception as exc:  # a bug outside the rerank pipeline (which has its own)
            log.error(
                "internal_error",
                error=exc.__class__.__name__,
                traceback="".join(traceback.format_tb(exc.__traceback__)),
            )
            response = error_response(internal_error(rid), rid)
        if not response.prepared:
            response.headers.setdefault("X-Request-Id", rid)
            if request.get(CLOSE_CONNECTION) or _undecodable_rest(request):
                response.force_close()  # says `Connection: close`, then closes
                if isinstance(request.protocol, _JsonErrorsHandler):
                    request.protocol.stop_lingering()
        return response


def _undecodable_rest(request: web.Request) -> bool:
    """A compressed body the route answered without reading whole (a refusal such as
    401 or 405), or one aiohttp already failed to decode. After the answer aiohttp reads
    ("lingers" over) the rest of a body to reuse the connection; a body it cannot decode
    then dropped the connection unannounced, with "Unhandled exception" in the log. Such
    a connection is closed instead, and the answer says so. An uncompressed unread body
    is still read past as aiohttp does, so the connection stays usable."""
    if not request.body_exists:
        return False
    if request.content.exception() is not None:
        return True
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    return not request.content.is_eof() and encoding not in ("", "identity")


def internal_error(rid: str) -> ApiError:
    return ApiError(
        500, f"internal error in the gateway; the operators can find it by request id {rid}"
    )


# --- aiohttp's own error answers ---------------------------------------------------------


def parser_error_reason(exc: BaseException | None) -> str:
    """A fixed description of an aiohttp parser error: never its raw bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        where = f"{limit} bytes" if limit is not None else "the limit"
        return f"a request line or header line is longer than {where}"
    if isinstance(exc, ContentEncodingError):
        return (
            "the body could not be decoded per its Content-Encoding (accepted: "
            + ", ".join(ACCEPTED_ENCODINGS)
            + ")"
        )
    if isinstance(exc, (TransferEncodingError, ContentLengthError)):
        return "the body does not match its Content-Length or chunked framing"
    if isinstance(exc, InvalidHeader):
        return "a header is malformed"
    if isinstance(exc, BadHttpMethod):
        return "the request method is not valid HTTP"
    if isinstance(exc, BadStatusLine):
        return "the request line is not valid HTTP/1.1"
    if isinstance(exc, InvalidURLError):
        return "the request target is not a valid URL"
    if isinstance(exc, BadHttpMessage):
        return _llhttp_reason(exc.message)
    return "malformed HTTP request"


_FIXED_MESSAGES = frozenset(
    {
        "Too many headers received",
        "Missing 'Host' header in request.",
        "Transfer-Encoding can't be present with Content-Length",
    }
)
_LLHTTP_REASON = re.compile(r"[A-Za-z][A-Za-z ,'-]{0,79}")


def _llhttp_reason(message: str) -> str:
    # llhttp's messages are "<fixed description>:\n\n  <raw bytes>\n  ^": keep the first part.
    if message in _FIXED_MESSAGES:
        return message.rstrip(".")
    head, sep, _ = message.partition(":\n")
    if sep and _LLHTTP_REASON.fullmatch(head):
        return head
    return "malformed HTTP request"


class _JsonErrorsHandler(RequestHandler):
    """aiohttp's protocol handler, with errors answered (and logged) the gateway's way."""

    def stop_lingering(self) -> None:
        """Close after this answer without reading the rest of the request's body."""
        self._lingering_time = 0.0

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = caller_request_id(request) if request.headers else None
        rid = rid or str(uuid.uuid4())
        if status >= 500:
            error = internal_error(rid) if status == 500 else ApiError(status, "gateway timeout")
            if exc is not None:
                tb = "".join(traceback.format_tb(exc.__traceback__))
                log.error("internal_error", request_id=rid, error=type(exc).__name__, traceback=tb)
        else:
            reason = parser_error_reason(exc)
            error = bad_request(f"malformed HTTP request: {reason}") if status == 400 else (
                ApiError(status, reason)
            )
            log.warning(
                "bad_http_request",
                request_id=rid,
                status=status,
                error=type(exc).__name__ if exc else None,
                reason=reason,
            )
        if request.writer.output_size > 0:  # as aiohttp: the response was already begun
            raise ConnectionError("the response was already sent; cannot send an error")
        response = error_response(error, rid)
        response.force_close()  # the parser's state is unknown: aiohttp closes after this
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorsHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer malformed HTTP in Cohere's JSON shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, the protocol factory above
        return server
