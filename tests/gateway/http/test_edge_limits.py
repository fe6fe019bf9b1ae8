"""The edge limits against a real gateway process, over raw sockets (issue 21): idle
connections, slow and oversized request heads, slow bodies, callers that leave mid-body,
one team's slow senders under server.max_in_flight, and the same protections on the
metrics listener.

Short limits make each case end within a second or two; every wait is a blocking read
with a timeout (the server closing the connection ends it), never a sleep."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import yaml
from backports import zstd

from gateway.http.auth import hash_key
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY
from tests.support.processes import GatewayProcess
from tests.support.rawhttp import Answer, RawConnection, request_bytes
from tests.support.servers import free_port

BODY = orjson.dumps({"model": "local-bm25", "query": "orbit", "documents": ["rockets", "pie"]})
SEARCH = (b"Authorization", b"Bearer " + TEAM_KEY.encode())
ADS = (b"Authorization", b"Bearer " + OTHER_TEAM_KEY.encode())
LIMITS = {
    "idle_timeout_s": 2.0,
    "header_timeout_s": 0.5,
    "body_timeout_s": 2.0,
    "max_header_bytes": 4096,
    "max_headers": 20,
}


class Gateway:
    def __init__(self, proc: GatewayProcess, url: str, metrics_url: str) -> None:
        self.proc, self.url, self.metrics_url = proc, url, metrics_url

    def log_line(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict:
        """The first log line `match` accepts, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.proc.seen if match(e)]
            if found:
                return found[0]
            try:
                entry = self.proc.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such log line in {self.proc.seen}") from None
            self.proc.seen.append(entry)

    def metric(self, line: str) -> bool:
        return line in httpx.get(self.metrics_url + "/metrics").text.splitlines()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port, metrics_port = free_port(), free_port()
    config = {
        "server": {"max_in_flight": 2, "metrics_port": metrics_port, **LIMITS},
        "auth": {"mode": "keys", "admin_key_sha256": hash_key(ADMIN_KEY)},
        "teams": {
            "search": {"key_sha256": [hash_key(TEAM_KEY)]},
            "ads": {"key_sha256": [hash_key(OTHER_TEAM_KEY)]},
        },
        "providers": {"offline": {"type": "local"}},
        "models": {"local-bm25": {"deployments": [{"provider": "offline"}]}},
    }
    path = tmp_path_factory.mktemp("edge") / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = GatewayProcess("--config", str(path), "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(url)
        proc.wait_event("metrics_listening")
        yield Gateway(proc, url, f"http://127.0.0.1:{metrics_port}")
    finally:
        proc.stop()


def read_answer(conn: RawConnection, method: str = "POST") -> Answer:
    """The answer the server sends without being sent more."""
    return conn.exchange(b"", method)


def test_an_idle_connection_is_closed(gateway: Gateway) -> None:
    """Was: open for aiohttp's 3,630 s, on the public port and the metrics port alike."""
    for url in (gateway.url, gateway.metrics_url):
        conn = RawConnection(url, timeout=10)
        assert conn.closed_by_server()  # EOF within the read timeout, nothing sent
        conn.close()


def test_a_head_that_does_not_arrive_in_time_is_closed(gateway: Gateway) -> None:
    """Was: one header line every few seconds kept a connection for an hour."""
    conn = RawConnection(gateway.url, timeout=10)
    conn.sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    assert conn.closed_by_server()
    conn.close()
    assert gateway.metric('rerank_edge_refusals_total{reason="header_timeout"} 1.0')


def test_a_head_over_max_header_bytes_is_431_in_cohere_shape(gateway: Gateway) -> None:
    """Was: 120 header lines of 8 KB were all kept (about 1 MB per connection)."""
    pads = [(b"X-Pad-%d" % i, b"a" * 1000) for i in range(8)]  # 8 KB, under max_headers
    conn = RawConnection(gateway.url, timeout=10)
    answer = conn.exchange(request_bytes("POST", "/v2/rerank", [SEARCH, *pads], BODY))
    assert answer.status == 431 and answer.will_close
    body = answer.json()
    assert set(body) == {"id", "message"}
    assert "server.max_header_bytes" in body["message"] and "4096" in body["message"]
    assert conn.closed_by_server()
    conn.close()
    assert gateway.metric('rerank_edge_refusals_total{reason="header_too_large"} 1.0')
    # A head within the limit is served as ever.
    conn = RawConnection(gateway.url, timeout=10)
    assert (
        conn.exchange(request_bytes("POST", "/v2/rerank", [SEARCH, *pads[:2]], BODY)).status == 200
    )
    conn.close()


def test_a_head_and_body_in_one_read_are_held_to_the_head_limit_alone(gateway: Gateway) -> None:
    """Head and body in one read go to the parser whole when the head ends within the
    limit; blank lines before a request line do not let an oversized head through."""
    documents = [f"document {i} " + "x" * 500 for i in range(40)]  # ~20 KB: over 4096
    body = orjson.dumps({"model": "local-bm25", "query": "document", "documents": documents})
    conn = RawConnection(gateway.url, timeout=10)
    answer = conn.exchange(request_bytes("POST", "/v2/rerank", [SEARCH], body))
    assert answer.status == 200 and len(answer.json()["results"]) == 40
    conn.close()
    pads = [(b"X-Pad-%d" % i, b"a" * 1000) for i in range(8)]
    conn = RawConnection(gateway.url, timeout=10)
    head_first = b"\r\n\r\n" + request_bytes("POST", "/v2/rerank", [SEARCH, *pads], BODY)
    assert conn.exchange(head_first).status == 431
    conn.close()


def test_a_body_that_does_not_arrive_in_time_is_408_and_closes(gateway: Gateway) -> None:
    """Was: a body sent one byte at a time was waited for without end."""
    conn = RawConnection(gateway.url, timeout=10)
    head = request_bytes("POST", "/v2/rerank", [SEARCH], b"")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 200")
    conn.sock.sendall(head + b"{")
    answer = read_answer(conn)
    assert answer.status == 408 and answer.will_close
    assert "server.body_timeout_s" in answer.json()["message"]
    assert conn.closed_by_server()
    conn.close()
    line = gateway.log_line(lambda e: e["event"] == "rerank" and e["status"] == 408)
    assert line["team"] == "search"


def test_a_caller_that_leaves_mid_body_is_a_499_not_a_500(gateway: Gateway) -> None:
    """Was: logged internal_error and counted as a 500, so any key could raise 5xx alerts."""
    conn = RawConnection(gateway.url, timeout=10)
    head = request_bytes("POST", "/v2/rerank", [SEARCH], b"")
    conn.sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: 200") + b'{"m')
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    line = gateway.log_line(lambda e: e["event"] == "rerank" and e["status"] == 499)
    assert line["team"] == "search" and "closed the connection" in line["error"]
    assert not [e for e in gateway.proc.seen if e["event"] == "internal_error"]
    assert gateway.metric('rerank_requests_total{model="unknown",status="499",team="search"} 1.0')


def test_slow_senders_of_one_team_hold_no_slot_of_max_in_flight(gateway: Gateway) -> None:
    """Was: with max_in_flight 2, two requests of one team sending their bodies slowly
    kept every other team at 503 for as long as they held on."""
    slow = [RawConnection(gateway.url, timeout=10) for _ in range(3)]
    head = request_bytes("POST", "/v2/rerank", [SEARCH], b"")
    for conn in slow:
        conn.sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: 200") + b"{")
    conn = RawConnection(gateway.url, timeout=10)
    for _ in range(3):
        assert conn.exchange(request_bytes("POST", "/v2/rerank", [ADS], BODY)).status == 200
    conn.close()
    # The slow ones were still sending: each gets its 408 only now.
    assert [read_answer(c).status for c in slow] == [408, 408, 408]
    for c in slow:
        c.close()
    assert gateway.metric("rerank_requests_shed_total 0.0")


def test_the_metrics_listener_decodes_no_compressed_body(gateway: Gateway) -> None:
    """Was: 256 KB of zstd to /admin/login on the metrics port was decoded (to 8 GiB) after
    its 413, stalling the process."""
    bomb = zstd.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB in a few KB
    headers = [
        (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Content-Encoding", b"zstd"),
    ]
    conn = RawConnection(gateway.metrics_url, timeout=10)
    answer = conn.exchange(request_bytes("POST", "/admin/login", headers, bomb))
    assert answer.status == 415 and answer.will_close
    assert "uncompressed" in answer.json()["message"]
    conn.close()
    form = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    conn = RawConnection(gateway.metrics_url, timeout=10)
    big = b"key=" + b"a" * (100 * 1024)
    answer = conn.exchange(request_bytes("POST", "/admin/login", form, big))
    assert answer.status == 413 and "at most 65536 bytes" in answer.json()["message"]
    conn.close()
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_admin_routes_on_the_public_port_take_small_uncompressed_bodies(gateway: Gateway) -> None:
    admin = (b"Authorization", b"Bearer " + ADMIN_KEY.encode())
    gzipped = [admin, (b"Content-Encoding", b"gzip"), (b"Content-Type", b"application/json")]
    conn = RawConnection(gateway.url, timeout=10)
    answer = conn.exchange(request_bytes("POST", "/admin/keys", gzipped, b"\x1f\x8b" + b"\0" * 20))
    assert answer.status == 415
    conn.close()
    conn = RawConnection(gateway.url, timeout=10)
    answer = conn.exchange(
        request_bytes("POST", "/admin/keys", [admin], b"{" + b" " * 70_000 + b"}")
    )
    assert answer.status == 413
    conn.close()
