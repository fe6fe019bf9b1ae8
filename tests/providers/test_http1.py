"""The upstream HTTP/1.1 client (providers/http1.py) against real loopback servers:
keep-alive, framing, a server closing idle connections, cut-short and invalid answers,
deadlines, cancellation, the pool limit and TLS with certificate checks."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from providers.http import HttpTransport
from providers.http1 import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_RESPONSE_BYTES,
    Connection,
    ResponseError,
)
from providers.types import CONNECT, MALFORMED, TIMEOUT, ProviderError

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

# A scripted server: called with each request (head and body bytes) and the writer.
Script = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback HTTP/1.1 server whose answers are raw bytes from a script; it counts
    connections and keeps every request head it read."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}/v2/rerank"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                await self.script(head, body, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[RawServer, str]]]]:
    servers: list[RawServer] = []

    async def start(script: Script, tls: ssl.SSLContext | None = None) -> tuple[RawServer, str]:
        server = RawServer(script)
        servers.append(server)
        return server, await server.start(tls)

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport("up")
    yield transport
    await transport.close()


async def failure(
    client: HttpTransport, url: str, headers: dict[str, str] | None = None, timeout_s: float = 5
) -> ProviderError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(ProviderError) as caught:
        await client.post(url, b"{}", headers or {}, timeout_s)
    return caught.value


async def answer_ok(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(OK)


async def test_keep_alive_reuses_one_connection_and_sends_host_and_length(
    serve, client: HttpTransport
) -> None:
    server, url = await serve(answer_ok)
    for _ in range(3):
        answer = await client.post(url, b'{"a": 1}', {"Authorization": "Bearer k"}, 5)
        assert (answer.status, answer.body) == (200, b"{}")
        assert answer.headers["content-type"] == "application/json"
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v2/rerank HTTP/1.1\r\n")
    port = url.split(":")[2].split("/")[0]
    assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head
    assert "\r\nContent-Length: 8\r\n" in head
    assert "\r\nAuthorization: Bearer k\r\n" in head


async def test_a_signed_path_goes_on_the_wire_as_encoded(serve, client: HttpTransport) -> None:
    server, url = await serve(answer_ok)
    base = url.rsplit("/v2/rerank", 1)[0]
    await client.post(base + "/model/arn%3Aaws%3Ax/invoke?x=1", b"{}", {}, 5)
    assert server.heads[0].startswith(b"POST /model/arn%3Aaws%3Ax/invoke?x=1 HTTP/1.1\r\n")


async def test_chunked_and_gzip_answers_are_decoded(serve, client: HttpTransport) -> None:
    payload = b'{"results": []}'
    packed = gzip.compress(payload)

    async def chunked_gzip(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        half = len(packed) // 2
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
            + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (half, packed[:half], len(packed) - half, packed[half:])
        )

    _, url = await serve(chunked_gzip)
    assert (await client.post(url, b"{}", {}, 5)).body == payload


async def test_an_answer_without_length_ends_at_the_close(serve, client: HttpTransport) -> None:
    async def until_close(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ok": true}')
        await writer.drain()
        writer.close()

    server, url = await serve(until_close)
    assert (await client.post(url, b"{}", {}, 5)).body == b'{"ok": true}'
    assert (await client.post(url, b"{}", {}, 5)).status == 200
    assert server.connections == 2  # Connection: close is honoured: no reuse


async def test_an_idle_connection_the_server_closed_is_replaced_not_failed(
    serve, client: HttpTransport
) -> None:
    # The server answers and then closes without saying so, as a keep-alive timeout does.
    async def answer_then_close(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        writer.close()

    server, url = await serve(answer_then_close)
    for _ in range(3):
        assert (await client.post(url, b"{}", {}, 5)).status == 200
        await asyncio.sleep(0.05)  # the close reaches the client while it is idle
    assert server.connections == 3


async def test_a_close_just_as_a_reused_connection_sends_is_retried_once(
    serve, client: HttpTransport
) -> None:
    # The second request on the connection is read and dropped without an answer: the
    # race a keep-alive timeout makes. The client resends once, on a new connection.
    seen: list[int] = []

    async def drop_second(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        if len(seen) == 2:
            writer.close()
            return
        writer.write(OK)

    server, url = await serve(drop_second)
    assert (await client.post(url, b"{}", {}, 5)).status == 200
    assert (await client.post(url, b"{}", {}, 5)).status == 200
    assert (len(seen), server.connections) == (3, 2)


async def test_a_new_connection_closed_before_answering_is_a_connect_error(
    serve, client: HttpTransport
) -> None:
    async def drop(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, url = await serve(drop)
    error = await failure(client, url)
    assert (error.kind, error.retryable) == (CONNECT, True)
    assert server.connections == 1  # not resent: a new connection has no stale excuse


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut":',  # cut short
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["cut-short", "invalid-status", "bad-gzip"],
)
async def test_a_broken_answer_is_malformed_and_retryable(
    serve, client: HttpTransport, answer: bytes
) -> None:
    async def broken(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    _, url = await serve(broken)
    error = await failure(client, url)
    assert (error.kind, error.retryable) == (MALFORMED, True)


async def test_a_second_answer_to_one_request_spoils_the_connection(
    serve, client: HttpTransport
) -> None:
    # An upstream out of step (two answers at once): the first is the answer, and the
    # connection is not reused, so the extra one never answers the next request.
    async def twice(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK + OK.replace(b"{}", b"[]"))

    server, url = await serve(twice)
    assert (await client.post(url, b"{}", {}, 5)).body == b"{}"
    assert (await client.post(url, b"{}", {}, 5)).body == b"{}"
    assert server.connections == 2


async def test_a_deadline_is_a_timeout_and_the_late_connection_is_not_reused(
    serve, client: HttpTransport
) -> None:
    calls: list[int] = []

    async def slow_first(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(0.5)
        writer.write(OK)

    server, url = await serve(slow_first)
    assert (await failure(client, url, timeout_s=0.1)).kind == TIMEOUT
    assert (await client.post(url, b"{}", {}, 5)).body == b"{}"
    assert server.connections == 2  # the late answer never lands on the next request


async def test_a_cancelled_call_closes_its_connection_and_frees_its_slot(serve) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        if not arrived.is_set():
            arrived.set()
            await release.wait()
        writer.write(OK)

    server, url = await serve(hold)
    transport = HttpTransport("up", max_connections=1)
    try:
        loser = asyncio.create_task(transport.post(url, b"{}", {}, 5))  # a hedge's loser
        await arrived.wait()
        waiting = asyncio.create_task(transport.post(url, b"{}", {}, 5))
        await asyncio.sleep(0.05)
        waiting.cancel()  # a call cancelled while waiting in line gives its place back
        loser.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loser
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert (await transport.post(url, b"{}", {}, 5)).status == 200
    finally:
        await transport.close()
    assert server.connections == 2


async def test_a_line_break_in_a_header_is_refused_before_sending(
    serve, client: HttpTransport
) -> None:
    server, url = await serve(answer_ok)
    error = await failure(client, url, {"Authorization": "Bearer k\r\nX-Evil: 1"})
    assert (error.kind, error.retryable) == (CONNECT, False)
    assert server.connections == 0


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_checks_the_certificate(
    serve, client: HttpTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server, url = await serve(answer_ok, tls)
    assert (await failure(client, url)).kind == CONNECT  # an unknown issuer is refused
    assert server.heads == []
    # The same server, once its certificate is trusted (OpenSSL reads SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusting = HttpTransport("up")
    try:
        for _ in range(2):
            assert (await trusting.post(url, b"{}", {}, 5)).body == b"{}"
    finally:
        await trusting.close()
    assert len(server.heads) == 2 and server.heads[0].startswith(b"POST /v2/rerank HTTP/1.1")


def test_the_same_client_under_uvloop() -> None:
    # The gateway's processes run on uvloop, whose transports are not asyncio's classes.
    import uvloop

    async def scenario() -> tuple[int, list[bytes]]:
        server = RawServer(answer_ok)
        url = await server.start()
        transport = HttpTransport("up")
        try:
            bodies = [(await transport.post(url, b"{}", {}, 5)).body for _ in range(3)]
        finally:
            await transport.close()
            await server.close()
        return server.connections, bodies

    assert uvloop.run(scenario()) == (1, [b"{}"] * 3)


async def test_a_failed_connect_hands_its_slot_to_the_next_call_in_line() -> None:
    # Nothing listens on the port: both calls must fail to connect. The second waits for
    # the only slot; were the slot not passed on, it would wait out its deadline instead.
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v2/rerank"
    transport = HttpTransport("up", max_connections=1)
    try:
        outcomes = await asyncio.gather(
            transport.post(url, b"{}", {}, 5),
            transport.post(url, b"{}", {}, 5),
            return_exceptions=True,
        )
    finally:
        await transport.close()
    assert [(type(e), getattr(e, "kind", None)) for e in outcomes] == [(ProviderError, CONNECT)] * 2


async def test_names_are_looked_up_once_for_many_new_connections(
    serve, client: HttpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `Connection: close` makes every call open a new connection; the address of
    # `localhost` is looked up for the first only (and reused for DNS_TTL_S).
    async def close_each(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        await writer.drain()
        writer.close()

    server, url = await serve(close_each)
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counted(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counted)
    by_name = url.replace("127.0.0.1", "localhost")
    for _ in range(3):
        assert (await client.post(by_name, b"{}", {}, 5)).body == b"{}"
    assert (server.connections, lookups) == (3, ["localhost"])
    assert b"\r\nHost: localhost:" in server.heads[0]


# -- bounds: what a broken or hostile upstream can make the client hold in memory

BIG = MAX_RESPONSE_BYTES + 8 * 1024 * 1024  # past the bound, in zeros (compresses ~1000:1)


def gzipped_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()


async def streams(writer: asyncio.StreamWriter, first: bytes, more: bytes, limit: int) -> None:
    """Write `first`, then `more` until the client hangs up or `limit` bytes are out."""
    writer.write(first)
    sent = len(first)
    while sent < limit and not writer.is_closing():
        writer.write(more)
        sent += len(more)
        await writer.drain()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_gzip_bomb_fails_once_it_decodes_past_the_bound(
    serve, client: HttpTransport, framing: str
) -> None:
    # ~40 KB on the wire, 40 MiB decoded: the bound counts decoded bytes, not sent ones.
    bomb = gzipped_zeros(BIG)
    assert len(bomb) < MAX_RESPONSE_BYTES // 100

    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        start = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
        if framing == "length":
            writer.write(start + b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb)
        elif framing == "chunked":
            writer.write(start + b"Transfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(bomb), bomb))
        else:
            writer.write(start + b"Connection: close\r\n\r\n" + bomb)
            await writer.drain()
            writer.close()

    _, url = await serve(answer)
    error = await failure(client, url)
    assert (error.kind, error.retryable) == (MALFORMED, True)
    assert f"decodes to more than {MAX_RESPONSE_BYTES} bytes" in error.message


async def test_an_answer_that_decodes_to_just_under_the_bound_is_whole(
    serve, client: HttpTransport
) -> None:
    packed = gzipped_zeros(MAX_RESPONSE_BYTES)

    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(packed), packed)
        )

    _, url = await serve(answer)
    assert (await client.post(url, b"{}", {}, 5)).body == bytes(MAX_RESPONSE_BYTES)


@pytest.mark.parametrize(
    ("first", "more", "said"),
    [
        # headers that never end
        (b"HTTP/1.1 200 OK\r\n", b"X-Filler: " + b"a" * 1000 + b"\r\n", "head larger than"),
        # one header value that never ends (httptools buffers it whole)
        (b"HTTP/1.1 200 OK\r\nX-Filler: ", b"a" * 4096, "head larger than"),
        # a status line that never ends
        (b"HTTP/1.1 200 ", b"a" * 4096, "head larger than"),
        # interim answers, forever
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", "head larger than"),
        # a trailer that never ends after a chunked body
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: ",
            b"a" * 4096,
            "chunk framing or trailers",
        ),
        # a body in one-byte chunks, forever
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1\r\n \r\n" * 1000,
            "chunk framing or trailers",
        ),
        # a chunk that announces 2**60 bytes and keeps sending
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
            b" " * 65536,
            f"larger than {MAX_RESPONSE_BYTES} bytes",
        ),
        # no length, no end
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b" " * 65536, "larger than"),
    ],
    ids=[
        "endless-headers",
        "endless-header-value",
        "endless-status-line",
        "endless-interim",
        "endless-trailers",
        "tiny-chunks",
        "huge-chunk",
        "endless-read-to-close",
    ],
)
async def test_an_endless_answer_fails_at_its_bound_not_at_the_deadline(
    serve, client: HttpTransport, first: bytes, more: bytes, said: str
) -> None:
    async def endless(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        await streams(writer, first, more, limit=3 * MAX_RESPONSE_BYTES)

    _, url = await serve(endless)
    error = await failure(client, url, timeout_s=30)
    assert (error.kind, error.retryable) == (MALFORMED, True)
    assert said in error.message


async def test_a_head_over_its_byte_bound_fails_on_bytes_however_the_reads_fall() -> None:
    # 1 KB header lines pass the head's 64 KiB at the 64th line, before the 100-header
    # bound. Given in one read of 120 lines (as a fast sender's bytes may arrive), the
    # byte bound still decides, as it does when the lines arrive one read at a time.
    loop = asyncio.get_running_loop()
    mine, theirs = socket.socketpair()
    _, conn = await loop.connect_accepted_socket(lambda: Connection(loop), sock=mine)
    line = b"X-Pad: " + b"a" * 1017 + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\n" + line * 120
    assert len(line) * 64 > MAX_HEAD_BYTES and MAX_HEADERS < 120
    exchange = asyncio.ensure_future(conn.exchange(b"", b""))
    await asyncio.sleep(0)
    conn.data_received(head)
    with pytest.raises(ResponseError, match=f"a response head larger than {MAX_HEAD_BYTES} bytes"):
        await exchange
    assert conn.transport is None
    theirs.close()


async def test_more_headers_than_the_bound_fail(serve, client: HttpTransport) -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(MAX_HEADERS))

    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK.replace(b"\r\n\r\n", b"\r\n" + many + b"\r\n", 1))

    _, url = await serve(answer)
    error = await failure(client, url)
    assert (error.kind, error.retryable) == (MALFORMED, True)
    assert f"more than {MAX_HEADERS} headers" in error.message


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"gzip, gzip", b"compress"])
async def test_an_encoding_we_never_asked_for_is_refused(
    serve, client: HttpTransport, coding: bytes
) -> None:
    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK.replace(b"\r\n\r\n", b"\r\nContent-Encoding: " + coding + b"\r\n\r\n", 1))

    _, url = await serve(answer)
    error = await failure(client, url)
    assert (error.kind, error.retryable) == (MALFORMED, True)
    assert "an encoding we cannot read" in error.message


async def test_interim_answers_before_the_answer_are_skipped(serve, client: HttpTransport) -> None:
    async def answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + OK)

    _, url = await serve(answer)
    answer_ = await client.post(url, b"{}", {}, 5)
    assert (answer_.status, answer_.body) == (200, b"{}")
    assert "x-interim" not in answer_.headers
