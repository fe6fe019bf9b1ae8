"""The HTTP edge, around every route of every listener: one request id per request, the
limits that bound what a connection may cost before a route runs, and answers in Cohere's
JSON shape also where aiohttp itself would answer in plain text.

Request ids: a caller's valid `X-Request-Id` is kept, behind a fresh random prefix
(`<12 hex>-<caller's id>`) so no caller can give its request another request's id; without
one, a new uuid. The id is the error body's `id`, the `X-Request-Id` header and the
`request_id` of every log line of the request (bound with structlog's contextvars), so
the id an SDK shows finds the request in the logs.

Edge limits (`EdgeLimits`, from `server.*`; docs/security.md): a connection with no
complete request head `idle_timeout_s` after it opened or after its last answer is closed
(aiohttp's keep-alive timer); a head must arrive whole within `header_timeout_s` of its
first byte and within `max_header_bytes` (431), in at most `max_headers` header lines;
a body must arrive whole within `body_timeout_s` of its head (408, then the connection
closes). Routes other than rerank take small uncompressed bodies only (`guard_body`).

Malformed HTTP (a control character in a header, an oversized header line, a body whose
framing or Content-Encoding cannot be decoded) is rejected by aiohttp's parser before any
route runs. `GatewayRunner` serves the app with a protocol handler whose error answer is
Cohere's `{"id", "message"}` with `Connection: close`, and whose log line names the
parser error's class and its fixed description, never the raw bytes (which can hold an
Authorization header). What cannot change: aiohttp closes the connection after such an
error, and a request it cannot parse at all has no headers, so no caller id.

Private aiohttp API, used in this module only (tests/gateway/http/test_edge_aiohttp.py
pins each, so an aiohttp upgrade that changes one fails there, by name):
- `web.AppRunner._make_server` (overridden), `web.Server._kwargs` and `._loop`: connections
  are served by `_EdgeHandler` instead of aiohttp's `RequestHandler`;
- `RequestHandler._parser` (from `BaseProtocol`): wrapped by `_Reading`, which sees every
  chunk fed to it and the `(message, payload)` pairs it returns, to count a head's bytes
  and time and to start a body's deadline;
- `RequestHandler._lingering_time`: set to 0 to close at once after answering a request
  whose body cannot be skipped safely.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.config.model import ServerConfig
from gateway.errors import ApiError, MalformedHttp, bad_request
from gateway.http.answers import SMALL_BODY_BYTES, answer, small_body_too_large

REQUEST_ID = web.RequestKey("request_id", str)
# Set by a handler whose request left the connection unusable (an undecodable body).
CLOSE_CONNECTION = web.RequestKey("close_connection", bool)
_VALID_ID = re.compile(r"[!-~]{1,128}")  # visible ASCII: safe in a header, a log and JSON
ACCEPTED_ENCODINGS = ("identity", "gzip", "deflate", "br", "zstd")
# The routes that take a rerank body (up to server.max_body_bytes, compressed or not).
RERANK_PATHS = ("/v2/rerank", "/v1/rerank", "/v1/v2/rerank", "/v1/v1/rerank")
# Every other route (admin JSON, the status page's sign-in form) takes at most
# SMALL_BODY_BYTES, uncompressed: nothing there needs more, nothing is decompressed for it.


def caller_request_id(request: web.BaseRequest) -> str | None:
    """The caller's `X-Request-Id` behind a fresh random prefix, or None (none or invalid).
    The prefix makes every id unique whatever callers send, so no team can give its
    requests the id of another team's request in the logs and upstream."""
    given = request.headers.get("X-Request-Id", "").strip()
    return f"{secrets.token_hex(6)}-{given}" if _VALID_ID.fullmatch(given) else None


def request_id(request: web.Request) -> str:
    """The id of this request (assigned by `middleware`; a fresh one outside it)."""
    found = request.get(REQUEST_ID)
    if found is None:
        found = request[REQUEST_ID] = caller_request_id(request) or new_uuid()
    return found


def new_uuid() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` writes it, for half its
    cost (no UUID object). Fresh random bytes each call: nothing shared with a fork."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _body_timeout(limit_s: float) -> ApiError:
    return ApiError(
        408,
        f"the request body did not arrive within {limit_s:g} s of its headers "
        "(server.body_timeout_s); send it at once, or smaller",
    )


def _uncounted(reason: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What a connection may cost before a route runs, the same on every listener."""

    idle_timeout_s: float = 15.0
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    count: Callable[[str], None] = _uncounted  # a refusal, by reason (a metric)

    @classmethod
    def from_config(
        cls, server: ServerConfig, count: Callable[[str], None] = _uncounted
    ) -> EdgeLimits:
        return cls(
            idle_timeout_s=server.idle_timeout_s,
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
            count=count,
        )

    def handler_args(self) -> dict[str, Any]:
        """aiohttp's own settings of a connection's protocol handler, and ours."""
        line = min(8190, self.max_header_bytes)  # aiohttp's default, within the total
        return {
            "keepalive_timeout": self.idle_timeout_s,
            "max_headers": self.max_headers,
            "max_line_size": line,
            "max_field_size": line,
            "edge": self,
        }


EDGE_LIMITS = web.AppKey("edge_limits", EdgeLimits)  # read by GatewayRunner


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Assign the request id, bind it to every log line, and answer every error outside
    the rerank pipeline (which answers its own, for its access log) in Cohere's shape
    (`gateway.http.answers`): `ApiError`s of the admin and other routes, routing errors
    (404, 405) instead of aiohttp's text pages, and gateway bugs."""
    rid = request_id(request)
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            request = guard_body(request)
            response = await handler(request)
        except Exception as exc:
            if isinstance(exc, web.HTTPException) and exc.status < 400:
                raise  # a redirect is an answer, not an error
            response = answer(exc, rid, request.path).response
        protocol = request.protocol
        if isinstance(protocol, _EdgeHandler):  # the body's deadline ends with the answer
            protocol.answered()
        if not response.prepared:
            response.headers.setdefault("X-Request-Id", rid)
            if request.get(CLOSE_CONNECTION) or _undecodable_rest(request):
                response.force_close()  # says `Connection: close`, then closes
                if isinstance(protocol, _EdgeHandler):
                    protocol.stop_lingering()
        return response


def guard_body(request: web.Request) -> web.Request:
    """A route other than rerank takes at most SMALL_BODY_BYTES, uncompressed: refused
    before a byte of it is read when it says more (413) or is compressed (415); the
    request handed on reads at most that many (aiohttp's 413 past it)."""
    if not request.body_exists or request.match_info.route.resource is None:
        return request
    if request.match_info.route.resource.canonical in RERANK_PATHS:
        return request  # the pipeline checks these after authenticating the caller
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        request[CLOSE_CONNECTION] = True  # the compressed rest is not read past
        raise ApiError(
            415,
            f"this route takes an uncompressed body; leave out Content-Encoding "
            f"(got {encoding[:40]!r})",
            log_message="compressed body on a route that takes none",
        )
    if request.content_length is not None and request.content_length > SMALL_BODY_BYTES:
        raise small_body_too_large()
    return request.clone(client_max_size=SMALL_BODY_BYTES)


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


# --- aiohttp's own error answers ---------------------------------------------------------


def parser_error_reason(exc: BaseException | None) -> str:
    """A fixed description of an aiohttp parser error: never its raw bytes."""
    if isinstance(exc, HeadTooLarge):
        return exc.message
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


class HeadTooLarge(BadHttpMessage):
    """A request head (request line and headers) longer than server.max_header_bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request line and headers are larger than {limit} bytes "
            "(server.max_header_bytes); send fewer or shorter headers"
        )


_Parsed = tuple[Sequence[tuple[Any, StreamReader]], bool, bytes]


def _holds_head(data: bytes, room: int) -> bool:
    """Whether a head that starts `data` ends (its first empty line) within `room` bytes.
    A read that starts with a line break may be blank lines before a request line, which
    the parser skips: such a read does not count, and is cut at the limit as any other."""
    return data[:1] not in (b"\r", b"\n") and data.find(b"\r\n\r\n", 0, room) >= 0


class _Reading:
    """aiohttp's request parser as its handler feeds it, watched: how many bytes and how
    long the head being received takes, and the deadline of the body that follows.

    Bytes fed while no body is arriving belong to a head; once the parser returns a
    message the head is done. A chunk that ends one body and starts the next head is not
    counted, so a head may exceed the limit by at most one read chunk."""

    def __init__(self, parser: Any, handler: _EdgeHandler, limits: EdgeLimits) -> None:
        self._parser = parser
        self._handler = handler
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body being received, if any
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def __getattr__(self, name: str) -> Any:  # the rest of the parser, as it is
        return getattr(self._parser, name)

    def feed_data(self, data: bytes) -> _Parsed:
        if self._refused:  # the connection is closing: ignore what still comes
            return (), False, b""
        in_head = self._body is None or self._body.is_eof()
        if in_head and data and self._head_timer is None:
            self._head_timer = self._loop.call_later(
                self._limits.header_timeout_s, self._head_timed_out
            )
        room = self._limits.max_header_bytes - self._head_bytes
        # A read that holds the head's end within the limit goes to the parser whole (the
        # usual request: head and body in one read, no copy of the body made here).
        if in_head and len(data) > room and not _holds_head(data, room):
            # Otherwise the parser sees no more of a head than the limit: what fits first,
            # and the rest only if a whole head was in it (the rest is body or the next head).
            messages, upgraded, tail = self._parser.feed_data(data[:room])
            if not messages:
                self._refuse_head()
            more, upgraded, tail = self._parser.feed_data(data[room:])
            messages = [*messages, *more]
        else:
            messages, upgraded, tail = self._parser.feed_data(data)
        if messages:
            self._head_done()
            payload = messages[-1][1]
            if not payload.is_eof():
                self._start_body(payload)
        elif in_head:
            self._head_bytes += len(data)
        return messages, upgraded, tail

    def _refuse_head(self) -> None:
        self._refused = True
        self._head_done()
        self._limits.count("header_too_large")
        raise HeadTooLarge(self._limits.max_header_bytes)

    def _head_done(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """The head did not arrive whole in time: close (there is no request to answer)."""
        self._head_timer = None
        self._refused = True
        self._limits.count("header_timeout")
        self._handler.force_close()

    def _start_body(self, payload: StreamReader) -> None:
        self.answered()
        self._body = payload
        self._body_timer = self._loop.call_later(
            self._limits.body_timeout_s, self._body_timed_out, payload
        )

    def _body_timed_out(self, payload: StreamReader) -> None:
        """Late: whoever reads the body gets a 408 (which closes the connection)."""
        self._body_timer = None
        if not payload.is_eof() and payload.exception() is None:
            self._limits.count("body_timeout")
            payload.set_exception(_body_timeout(self._limits.body_timeout_s))

    def answered(self) -> None:
        """The request was answered: what is left of its body is aiohttp's to skip
        (for at most its lingering time) or to close on."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def close(self) -> None:
        self._head_done()
        self.answered()


class _EdgeHandler(RequestHandler):
    """aiohttp's protocol handler, with the edge limits kept and errors answered (and
    logged) the gateway's way."""

    def __init__(self, manager: web.Server, *, edge: EdgeLimits | None = None, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._reading = _Reading(self._parser, self, edge or EdgeLimits())
        self._parser = self._reading  # type: ignore[assignment]  # the same interface

    def answered(self) -> None:
        self._reading.answered()

    def stop_lingering(self) -> None:
        """Close after this answer without reading the rest of the request's body."""
        self._lingering_time = 0.0

    def connection_lost(self, exc: BaseException | None) -> None:
        self._reading.close()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = caller_request_id(request) if request.headers else None
        rid = rid or new_uuid()
        response = answer(_protocol_error(status, exc), rid).response  # and its log record
        if request.writer.output_size > 0:  # as aiohttp: the response was already begun
            raise ConnectionError("the response was already sent; cannot send an error")
        response.force_close()  # the parser's state is unknown: aiohttp closes after this
        return response


def _protocol_error(status: int, exc: BaseException | None) -> Exception:
    """What aiohttp's protocol handler reports, as the exception it stands for: a handler's
    bug (500), a handler past its time (504), or a request the parser refused (4xx)."""
    if status == 500:
        return exc if isinstance(exc, Exception) else RuntimeError("a 500 without a cause")
    if status > 500:
        return ApiError(status, "gateway timeout")
    if isinstance(exc, HeadTooLarge):
        status = 431
    reason = parser_error_reason(exc)
    message = bad_request(f"malformed HTTP request: {reason}").message if status == 400 else reason
    return MalformedHttp(status, message, reason, type(exc).__name__ if exc else None)


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _EdgeHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections keep the app's edge limits (`EDGE_LIMITS`, set
    by the app factory) and answer malformed HTTP in Cohere's JSON shape."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        limits = app.get(EDGE_LIMITS)
        if limits is not None:
            kwargs = {**limits.handler_args(), **kwargs}
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, the protocol factory above
        return server
