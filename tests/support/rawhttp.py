"""HTTP/1.1 over a raw socket, for requests a client library refuses to send (control
characters and undecodable bytes in headers, broken framing) and for checking what a
keep-alive connection does after an error."""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    will_close: bool  # the server said `Connection: close` (or spoke HTTP/1.0)

    def json(self) -> dict:
        return orjson.loads(self.body)


def request_bytes(
    method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class RawConnection:
    """One keep-alive connection; `exchange` sends bytes and reads one answer."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.sock = socket.create_connection(self.address, timeout=timeout)

    def exchange(self, data: bytes, method: str = "POST") -> Answer:
        self.sock.sendall(data)
        resp = http.client.HTTPResponse(self.sock, method=method)
        resp.begin()
        body = resp.read()
        return Answer(resp.status, resp.headers, body, bool(resp.will_close))

    def closed_by_server(self) -> bool:
        """True when the server has closed its end (reads give EOF, not a timeout)."""
        self.sock.settimeout(5.0)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def exchange_once(base_url: str, data: bytes, method: str = "POST") -> Answer:
    conn = RawConnection(base_url)
    try:
        return conn.exchange(data, method)
    finally:
        conn.close()
