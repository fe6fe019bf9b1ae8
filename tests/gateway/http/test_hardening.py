"""Regressions from the hardening review (issue 11), through the HTTP API: bad input is
a Cohere-shaped 4xx (never a 500 or plain text), one request id ties an answer to its log
lines, and refusals say what a client can do about them."""

from __future__ import annotations

import gzip
import http.client
import logging
import re
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import cohere
import orjson
import pytest
import structlog
from backports import zstd
from cohere.core.api_error import ApiError as SdkApiError

from tests.conftest import ADMIN_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.governance import get, governed
from tests.support.rawhttp import RawConnection, exchange_once, request_bytes

BODY = {"model": "rerank-v3.5", "query": "what is fuzzing", "documents": ["fuzz", "calm"]}
RAW_BODY = orjson.dumps(BODY)
BEARER = (b"Authorization", b"Bearer " + TEAM_KEY.encode())


def assert_cohere_error(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    data = answer.json()
    assert set(data) == {"id", "message"}
    assert data["id"] == answer.headers["X-Request-Id"]
    return data


@pytest.fixture
def url(fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]) -> str:
    return start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/rerank", "/admin/usage"])
def test_undecodable_bytes_in_the_authorization_header_are_a_401(url: str, path: str) -> None:
    """Was a 500: UnicodeEncodeError hashing a key with raw non-UTF-8 bytes."""
    method = "POST" if path == "/v2/rerank" else "GET"
    body = RAW_BODY if method == "POST" else b""
    data = request_bytes(method, path, [(b"Authorization", b"Bearer caf\xe9")], body)
    answer = exchange_once(url, data, method)
    message = assert_cohere_error(answer, 401)["message"]
    assert message.startswith("invalid ") and "printable ASCII" in message


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("max_tokens_per_doc", 2**64, "between 1 and 2147483647"),
        ("max_tokens_per_doc", 1e300, "between 1 and 2147483647"),
        ("max_tokens_per_doc", 2**31, "between 1 and 2147483647"),
        ("top_n", 2**64 - 1, "between 1 and 2147483647"),
        ("top_n", -(2**63), "at least 1"),
        ("priority", 2**70, "between 0 and 999"),
        ("max_chunks_per_doc", 2**64, "between 1 and 9999"),
    ],
)
def test_integers_out_of_range_are_a_400_naming_the_field_and_bound(
    url: str, fake_cohere: tuple[FakeCohere, str], field: str, value: Any, bound: str
) -> None:
    """Was a 500: orjson cannot encode 2**64 for the Cohere deployment's body."""
    raw = RAW_BODY[:-1] + b', "' + field.encode() + b'": ' + str(value).encode() + b"}"
    answer = exchange_once(url, request_bytes("POST", "/v2/rerank", [BEARER], raw))
    message = assert_cohere_error(answer, 400)["message"]
    assert message.startswith(f"invalid request: {field} must be {bound} (got ")
    assert len(message) < 200  # a 300-digit number is not echoed whole
    assert fake_cohere[0].calls == []


def test_the_largest_accepted_integers_reach_the_upstream(
    url: str, fake_cohere: tuple[FakeCohere, str]
) -> None:
    body = {**BODY, "max_tokens_per_doc": 2**31 - 1, "top_n": 2**31 - 1, "priority": 999}
    answer = exchange_once(url, request_bytes("POST", "/v2/rerank", [BEARER], orjson.dumps(body)))
    assert answer.status == 200, answer.body
    assert fake_cohere[0].calls[0]["max_tokens_per_doc"] == 2**31 - 1


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
        ("identity", lambda b: b),
    ],
)
def test_every_accepted_content_encoding_is_decoded(
    url: str, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    """br was aiohttp's plain-text 400 "please install Brotli"."""
    headers = [BEARER, (b"Content-Encoding", encoding.encode())]
    answer = exchange_once(url, request_bytes("POST", "/v2/rerank", headers, compress(RAW_BODY)))
    assert answer.status == 200, answer.body
    assert len(answer.json()["results"]) == 2


@pytest.mark.parametrize("encoding", ["compress", "x-gzip", "gzip, br", "\u00e9"])
def test_other_content_encodings_are_a_415_listing_the_accepted_ones(
    url: str, encoding: str
) -> None:
    conn = RawConnection(url)
    headers = [BEARER, (b"Content-Encoding", encoding.encode("latin-1"))]
    answer = conn.exchange(request_bytes("POST", "/v2/rerank", headers, RAW_BODY))
    message = assert_cohere_error(answer, 415)["message"]
    assert message.endswith("with one of identity, gzip, deflate, br, zstd")
    # The body was well framed: the connection carries the next request.
    assert not answer.will_close
    assert conn.exchange(request_bytes("POST", "/v2/rerank", [BEARER], RAW_BODY)).status == 200
    conn.close()


@pytest.mark.parametrize("path", ["/v2/rerank", "/v2/nowhere"])
def test_a_refusal_before_an_unread_broken_body_closes_the_connection_cleanly(
    url: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the raw fuzzing: a 401 or 404 answered without reading a gzip body that
    then failed to decode; aiohttp dropped the keep-alive connection unannounced."""
    conn = RawConnection(url)
    head = request_bytes("POST", path, [(b"Content-Encoding", b"gzip")], b"x" * 20)
    with caplog.at_level(logging.DEBUG):
        conn.sock.sendall(head[:-10])  # the body is still arriving when the answer goes
        resp = http.client.HTTPResponse(conn.sock, method="POST")
        resp.begin()
        body = resp.read()
        assert resp.will_close
        conn.sock.sendall(head[-10:])
        assert conn.closed_by_server()
    assert resp.status in (401, 404) and orjson.loads(body)["id"] == resp.headers["X-Request-Id"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    conn.close()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_broken_compressed_body_is_a_400_that_closes_the_connection_cleanly(
    url: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Was a JSON 400, then the connection dropped without `Connection: close` (the next
    request on it failed with EOF) and aiohttp logged "Unhandled exception"."""
    conn = RawConnection(url)
    headers = [BEARER, (b"Content-Encoding", encoding.encode())]
    with caplog.at_level(logging.DEBUG):
        answer = conn.exchange(request_bytes("POST", "/v2/rerank", headers, b"not compressed!"))
        assert conn.closed_by_server()
    message = assert_cohere_error(answer, 400)["message"]
    assert message.startswith("invalid request: the request body could not be read (")
    assert answer.will_close  # said so: a client opens a new connection for the next one
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    conn.close()
    assert exchange_once(url, request_bytes("POST", "/v2/rerank", [BEARER], RAW_BODY)).status == 200


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"Authorization: Bearer " + TEAM_KEY.encode() + b"\x01", "Invalid header value char"),
        (b"X-Note: a\x00b", "Invalid header value char"),
        (b"X-Long: " + b"a" * 9000, "a request line or header line is longer than 8190 bytes"),
        (b"Bad Header: x", "Invalid header token"),
    ],
)
def test_malformed_http_is_answered_in_cohere_shape_and_logged_without_its_bytes(
    url: str, header: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Was aiohttp's text/plain 400, and a log line quoting the header: the team key."""
    data = (
        b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nContent-Length: %d\r\n\r\n"
    ) % len(RAW_BODY) + RAW_BODY
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
        answer = exchange_once(url, data)
    message = assert_cohere_error(answer, 400)["message"]
    assert message == f"invalid request: malformed HTTP request: {reason}"
    assert answer.will_close
    [line] = [e for e in logs if e["event"] == "bad_http_request"]
    assert line["request_id"] == answer.json()["id"]
    assert line["reason"] == reason
    dumped = repr(logs) + caplog.text
    assert TEAM_KEY not in dumped and "\\x01" not in dumped and "aaaaaaaa" not in dumped


# --- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/v2/rerank", [], RAW_BODY, 401),
        ("POST", "/v2/rerank", [BEARER], b"{", 400),
        ("POST", "/v2/rerank", [BEARER], orjson.dumps({**BODY, "model": "nope"}), 404),
        ("POST", "/v2/rerank", [BEARER], RAW_BODY, 200),
        ("GET", "/nowhere", [], b"", 404),
        ("GET", "/admin/usage", [BEARER], b"", 401),
    ],
)
@pytest.mark.parametrize("caller_id", [None, "trace-7f3a/span:42", "has space", "x" * 129])
def test_one_request_id_in_body_header_and_every_log_line(
    url: str,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    status: int,
    caller_id: str | None,
) -> None:
    """Was a fresh uuid in error bodies, unlike the header and the log's request_id."""
    sent = [*headers, (b"X-Request-Id", caller_id.encode())] if caller_id else headers
    with structlog.testing.capture_logs() as logs:
        answer = exchange_once(url, request_bytes(method, path, sent, body), method)
    assert answer.status == status, answer.body
    rid = answer.headers["X-Request-Id"]
    assert answer.json()["id"] == rid
    valid = caller_id is not None and " " not in caller_id and len(caller_id) <= 128
    # A valid caller id is kept behind a random prefix of the gateway's: 12 hex and "-".
    assert bool(re.fullmatch(r"[0-9a-f]{12}-" + re.escape(caller_id or ""), rid)) == valid
    assert all(line.get("request_id") == rid for line in logs), logs
    if path == "/v2/rerank":
        assert [line["event"] for line in logs][-1] == "rerank"


# --- refusals ---------------------------------------------------------------------------


def test_an_exhausted_budget_is_a_402_the_sdk_does_not_retry(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    """Was a 429 with Retry-After of hours: the SDK retried it, so every call of an
    over-budget team blocked for minutes before failing."""
    url = start_gateway(
        governed({"cohere-a": fake_cohere[1]}, search={"budget": {"usd_per_day": 0.002}})
    )
    client = cohere.ClientV2(api_key=TEAM_KEY, base_url=url, timeout=10)  # default retries
    client.rerank(**BODY)  # spends the whole budget
    with pytest.raises(SdkApiError) as info:
        client.rerank(**BODY)
    assert info.value.status_code == 402
    assert not isinstance(info.value, cohere.TooManyRequestsError)
    message = info.value.body["message"]
    assert message.startswith("budget exhausted: team 'search' has spent $0.002 of its daily")
    assert "the budget resets at " in message and "Retrying sooner will not help" in message
    assert info.value.body["id"] == info.value.headers["x-request-id"]
    assert 0 < int(info.value.headers["retry-after"]) <= 86_400
    metrics = exchange_once(url, request_bytes("GET", "/metrics", []), "GET").body.decode()
    # One HTTP request for the refused call: the SDK did not retry it.
    assert 'rerank_requests_total{model="rerank-v3.5",status="402",team="search"} 1.0' in metrics


async def test_a_team_body_limit_413_counts_in_rejected_limits(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    """Was counted in rerank_overfetch_total only, not in the usage report."""
    url = start_gateway(
        governed({"cohere-a": fake_cohere[1]}, search={"limits": {"max_body_bytes": 1024}})
    )
    big = orjson.dumps({**BODY, "documents": ["x" * 100] * 20})
    answer = exchange_once(url, request_bytes("POST", "/v2/rerank", [BEARER], big))
    assert "max_body_bytes for team 'search'" in assert_cohere_error(answer, 413)["message"]
    status, _, report = await get(url + "/admin/usage?team=search", ADMIN_KEY)
    assert status == 200
    [row] = report["rows"]
    assert (row["model"], row["rejected_limits"]) == ("unknown", 1)
    metrics = exchange_once(url, request_bytes("GET", "/metrics", []), "GET").body.decode()
    assert (
        'rerank_overfetch_total{action="reject",limit="max_body_bytes",team="search"} 1.0'
        in metrics
    )
