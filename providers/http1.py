"""A lean keep-alive HTTP/1.1 client for upstream POSTs: asyncio protocols and the
httptools (llhttp) parser, nothing else.

Why not aiohttp's client: on the bench machine it spent ~260 µs of CPU on each 40 KB
rerank call, as much as the whole gateway's server side, where this one spends a few
tens (docs/performance.md has the measurement). A rerank call needs little of what
aiohttp offers: one POST with a whole body, a whole answer, keep-alive, TLS, a deadline.
Redirects, cookies, proxies and streaming are not used (they were not used before either).

`ConnectionPool.request` is the one entry point; `HttpTransport` (providers/http.py)
maps its exceptions to `ProviderError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

# Bounds on one answer. A rerank answer is kilobytes; these stop an upstream that is broken
# or hostile from taking the process's memory (a gzip bomb, endless headers, tiny chunks).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # the body, both as received and once decoded
MAX_HEAD_BYTES = 64 * 1024  # status line and headers (any 1xx answers before them included)
MAX_HEADERS = 100  # header lines of one answer, 1xx answers and trailers included
HEAD_SLICE_BYTES = 16 * 1024  # a head is parsed this much at a time (MAX_HEAD_BYTES checks)
MAX_FRAMING_BYTES = 1024 * 1024  # chunk-size lines, chunk extensions and trailers
DNS_TTL_S = 300.0  # how long looked-up addresses are reused (aiohttp's connector: the same)
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's suggestion, and aiohttp's
AddrInfo = tuple[int, int, int, str, tuple]  # one getaddrinfo entry


class ResponseError(Exception):
    """The upstream's answer broke HTTP/1.1 or a bound: bad framing, cut short, too large."""


class Disconnected(ConnectionResetError):
    """The connection closed before the answer was complete.

    `before_answer` is true when not one byte of it arrived: on a reused connection that
    is the server closing an idle keep-alive as we sent, and the request is safe to resend.
    """

    def __init__(self, before_answer: bool) -> None:
        super().__init__(
            "the upstream closed the connection" + (" before answering" * before_answer)
        )
        self.before_answer = before_answer


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class Target(NamedTuple):
    origin: Origin
    path: bytes  # the request target as it goes on the wire (already percent-encoded)
    host_header: str


@lru_cache(maxsize=1024)
def parse_target(url: str) -> Target:
    """Where a URL string sends a request. The path is kept exactly as given: signed
    requests (SigV4) must send the path that was signed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        Origin(parts.scheme, host, port),
        path.encode("ascii"),
        shown if port == default else f"{shown}:{port}",
    )


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Connection(asyncio.Protocol):
    """One upstream connection: sends a request, parses its answer, and can be reused."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Response] | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()  # one buffer: a list of tiny chunks costs ~40 bytes each
        self._decoder: Decoder | None = None
        self._wire = 0  # bytes received for this answer
        self._raw = 0  # of which body bytes, before any Content-Encoding is undone
        self._interim = 0  # headers of 1xx answers, at the start of `_headers`
        self._received = False
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._spoiled = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._reads_to_close():
            self._finish()  # no Content-Length, not chunked: the close ends the body
        else:
            self._fail(Disconnected(before_answer=not self._received))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: this connection is unusable
            self.close()
            return
        self._received = True
        # A large read of a head that has not ended is parsed in slices, so its byte bound
        # is checked as often as for small reads: one read of 100 KB of header lines
        # would otherwise meet the header count's bound first, or not, by how reads fall.
        while not self._headers_done and len(data) > HEAD_SLICE_BYTES:
            self._feed(data[:HEAD_SLICE_BYTES])
            if self.transport is None:  # failed (or closed) on the way
                return
            data = data[HEAD_SLICE_BYTES:]
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._wire += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # a callback refused the answer
            cause = exc.__context__
            self._fail(cause if isinstance(cause, ResponseError) else ResponseError(str(exc)))
            return
        except httptools.HttpParserError as exc:
            self._fail(ResponseError(f"an invalid HTTP response ({exc})"))
            return
        if not self._complete:
            self._check_overhead()

    def _check_overhead(self) -> None:
        """Bound what is not body: httptools keeps a header being read in memory until it
        ends, so the bytes are counted here, as they arrive, not in the callbacks."""
        overhead = self._wire - self._raw
        if not self._headers_done and overhead > MAX_HEAD_BYTES:
            self._fail(ResponseError(f"a response head larger than {MAX_HEAD_BYTES} bytes"))
        elif overhead > MAX_HEAD_BYTES + MAX_FRAMING_BYTES:
            self._fail(
                ResponseError(f"more than {MAX_FRAMING_BYTES} bytes of chunk framing or trailers")
            )

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: the stream is out of step
            self._spoiled = True

    # A callback that raises stops the parser; `data_received` fails the call with it.

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(self._headers) > MAX_HEADERS:
            raise ResponseError(f"a response with more than {MAX_HEADERS} headers")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True
        if self._status >= 200:
            self._decoder = decoder_for(self._headers[self._interim :])

    def on_body(self, body: bytes) -> None:
        self._raw += len(body)
        if self._raw > MAX_RESPONSE_BYTES:
            raise ResponseError(f"a response larger than {MAX_RESPONSE_BYTES} bytes")
        self._body += body if self._decoder is None else self._decoder.feed(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx interim answers (we never send Expect) are skipped
            self._headers_done = False  # their headers still count against MAX_HEADERS
            self._interim = len(self._headers)
            return
        self._keep_alive = self._parser.should_keep_alive()  # read now: the parser resets
        self._finish()

    # -- use

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and self.transport is not None
            and not self.transport.is_closing()
            and self._keep_alive
            and not self._spoiled
        )

    async def exchange(self, head: bytes, body: bytes) -> Response:
        """Send one request and wait for its whole answer."""
        if self.transport is None:
            raise Disconnected(before_answer=True)
        self._status = self._wire = self._raw = self._interim = 0
        self._headers, self._body, self._decoder = [], bytearray(), None
        self._received = self._headers_done = self._complete = self._keep_alive = False
        self._waiter = waiter = self._loop.create_future()
        self.transport.writelines((head, body))
        try:
            return await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _finish(self) -> None:
        """The answer is whole: taken now, so nothing parsed after it can mix in."""
        if self._complete:
            return
        self._complete = True
        if self._waiter is None or self._waiter.done():
            return
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in self._headers[self._interim :]
        ]
        if self._decoder is not None:
            try:
                self._decoder.finish()
            except ResponseError as exc:
                self._fail(exc)
                return
        self._waiter.set_result(Response(self._status, headers, bytes(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        # The exception's traceback holds this connection: let the partial body go now.
        self._body, self._decoder = bytearray(), None
        self.close()

    def _reads_to_close(self) -> bool:
        names = {k.lower() for k, _ in self._headers[self._interim :]}
        return b"content-length" not in names and b"transfer-encoding" not in names


class Decoder:
    """Undoes a gzip or deflate Content-Encoding as the body arrives (we ask for none, but
    a server may send it), and refuses to produce more than MAX_RESPONSE_BYTES: the bound
    is on what the body decodes to, so a small compressed bomb stops at the bound."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._zlib = zlib.decompressobj(47 if coding != "deflate" else zlib.MAX_WBITS)
        self._room = MAX_RESPONSE_BYTES
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        if self._zlib.eof:  # what follows the end of the stream is ignored, as before
            return b""
        self._fed = True
        try:
            # Never more than one byte past the bound; short of it, all input is used.
            out = self._zlib.decompress(data, self._room + 1)
        except zlib.error as exc:
            raise ResponseError(f"a {self.coding} body that does not decode") from exc
        if len(out) > self._room:
            del out  # not kept alive by the traceback of the error
            raise ResponseError(f"a response that decodes to more than {MAX_RESPONSE_BYTES} bytes")
        self._room -= len(out)
        return out

    def finish(self) -> None:
        if self._fed and not self._zlib.eof:
            raise ResponseError(f"a {self.coding} body cut short")


def decoder_for(headers: list[tuple[bytes, bytes]]) -> Decoder | None:
    """The decoder an answer's Content-Encoding needs, None for none; ResponseError for an
    encoding we cannot read (brotli, zstd, stacked codings: we never ask for them)."""
    codings = [v.strip().lower() for k, v in headers if k.lower() == b"content-encoding"]
    if not codings or codings == [b"identity"] or codings == [b""]:
        return None
    if len(codings) == 1 and codings[0] in (b"gzip", b"x-gzip", b"deflate"):
        return Decoder(codings[0].decode("ascii"))
    shown = ", ".join(c.decode("latin-1") for c in codings)[:40]
    raise ResponseError(f"a body in an encoding we cannot read ({shown!r})")


class ConnectionPool:
    """Keep-alive connections to any number of origins, at most `max_connections` open.

    A call that finds every connection busy waits in line (`on_wait` is told); a
    connection idle longer than `keepalive_s` is closed rather than reused.
    """

    def __init__(self, max_connections: int, keepalive_s: float = 60.0) -> None:
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._opening = 0
        self._queue: deque[tuple[Origin, asyncio.Future[Connection | None]]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._dns: dict[Origin, tuple[float, Sequence[AddrInfo]]] = {}
        self._closed = False

    async def request(
        self, target: Target, head: bytes, body: bytes, on_wait: Callable[[], None] | None = None
    ) -> Response:
        """POST-style exchange on a pooled connection; a request that met an idle
        connection the server had just closed is sent once more on a new one."""
        for attempt in (1, 2):
            conn, reused = await self._acquire(target.origin, on_wait)
            done = False
            try:
                response = await conn.exchange(head, body)
                done = True
                return response
            except Disconnected as exc:
                if not (reused and exc.before_answer and attempt == 1):
                    raise
            finally:
                self._release(target.origin, conn, done and conn.reusable)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True  # calls still under way close their connections when done
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(ConnectionAbortedError("the connection pool was closed"))

    async def _acquire(
        self, origin: Origin, on_wait: Callable[[], None] | None
    ) -> tuple[Connection, bool]:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: its server is least likely to close it
            alive = conn.transport is not None and not conn.transport.is_closing()
            if alive and loop.time() - conn.idle_since < self.keepalive_s:
                return conn, True
            self._drop(conn)
        while len(self._open) + self._opening >= self.max_connections:
            if self._close_one_idle():
                break
            if on_wait is not None:
                on_wait()
                on_wait = None  # counted once per call, however long it waits
            conn_or_none = await self._wait_in_line(origin, loop)
            if conn_or_none is not None:
                return conn_or_none, True
        self._opening += 1
        try:
            conn = await self._connect(origin, loop)
        except BaseException:
            self._wake_one()  # the slot this call held is free again
            raise
        finally:
            self._opening -= 1
        self._open.add(conn)
        return conn, False

    async def _wait_in_line(
        self, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> Connection | None:
        """Wait for a connection handed over by `_release` (or None: a slot to open one)."""
        fut: asyncio.Future[Connection | None] = loop.create_future()
        entry = (origin, fut)
        self._queue.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                handed = fut.result()  # handed over just as we were cancelled: pass it on
                if handed is not None:
                    self._release(origin, handed, True)
                else:
                    self._wake_one()
            else:
                with contextlib.suppress(ValueError):  # already handed over and gone
                    self._queue.remove(entry)
            raise

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Connection:
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()  # verifies certificates and names
            tls = self._ssl
        addresses = await self._resolve(origin, loop)
        try:
            # Happy eyeballs, as aiohttp's connector did: an address family that is routed
            # but silent (IPv6 often) costs 250 ms, not the whole deadline.
            sock = await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S, interleave=1
            )
        except OSError:
            self._dns.pop(origin, None)  # the names may have moved: look them up again
            raise
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(loop),
                sock=sock,
                ssl=tls,
                server_hostname=origin.host if tls else None,
            )
        except BaseException:
            sock.close()
            raise
        return conn

    async def _resolve(
        self, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> Sequence[AddrInfo]:
        """The origin's addresses, looked up at most once per `DNS_TTL_S` (new connections
        are rare with keep-alive, but a burst opens many at once)."""
        now = loop.time()
        cached = self._dns.get(origin)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await loop.getaddrinfo(
            origin.host, origin.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        if not addresses:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"no address for {origin.host}")
        self._dns[origin] = (now + DNS_TTL_S, addresses)
        return addresses

    def _release(self, origin: Origin, conn: Connection, reusable: bool) -> None:
        if not reusable or self._closed:
            self._drop(conn)
            return
        for i, (wanted, fut) in enumerate(self._queue):
            if wanted == origin and not fut.done():
                del self._queue[i]
                fut.set_result(conn)
                return
        if self._queue:  # callers wait for another origin: make room for them
            self._drop(conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle = self._idle.setdefault(origin, [])
        idle.append(conn)
        oldest = idle[0]
        if oldest is not conn and conn.idle_since - oldest.idle_since >= self.keepalive_s:
            del idle[0]
            self._drop(oldest)

    def _drop(self, conn: Connection) -> None:
        conn.close()
        if conn in self._open:
            self._open.discard(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                conn = idle.pop(0)
                conn.close()
                self._open.discard(conn)
                return True
        return False


def request_head(target: Target, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers of a POST of `length` bytes to `target`."""
    lines = [f"POST {target.path.decode('ascii')} HTTP/1.1"]
    have_host = have_length = False
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} holds a line break")
        lower = name.lower()
        if lower == "host":
            have_host = True
        elif lower == "content-length":
            have_length = True
        lines.append(f"{name}: {value}")
    if not have_host:
        lines.append(f"Host: {target.host_header}")
    if not have_length:
        lines.append(f"Content-Length: {length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8")
