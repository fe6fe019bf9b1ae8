"""The gateway process under generated raw HTTP, then its log output scanned.

Requests go over raw keep-alive sockets, so they can carry what no client library sends:
control characters and undecodable bytes in header values, team and admin keys with a
stray byte, broken and unknown Content-Encodings, oversized lines. Every answer must be
JSON in Cohere's shape, never a 5xx, with the body `id` equal to X-Request-Id; a
connection the server keeps open must carry the next request. Afterwards every line the
process wrote must be JSON, and none may hold a key, the query or a document.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import orjson
import pytest
import yaml
from backports import zstd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.processes import GatewayProcess
from tests.support.rawhttp import RawConnection
from tests.support.servers import ServerLoop, free_port

QUERY = "confidential merger plans"
DOCS = ["private memo about acme", "secret salary table"]
SECRETS = (TEAM_KEY, OTHER_TEAM_KEY, ADMIN_KEY, QUERY, *DOCS, "merger", "salary")
CASES = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def gateway(servers: ServerLoop, tmp_path: Path) -> Iterator[tuple[str, GatewayProcess]]:
    data = gateway_config({"cohere-a": servers.serve(FakeCohere().app())})
    data["teams"]["ads"].update(
        rate_limit={"requests_per_minute": 5}, budget={"usd_per_day": 0.004}
    )
    data["teams"]["search"]["limits"] = {"max_body_bytes": 4096}
    data["cache"] = {"backend": "memory"}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = GatewayProcess("--config", str(config), "--port", str(port))
    try:
        proc.wait_ready(url)
        yield url, proc
    finally:
        proc.stop()


# --- strategies -------------------------------------------------------------------------

_value_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_keys = st.sampled_from([TEAM_KEY, OTHER_TEAM_KEY, ADMIN_KEY, "wrong-key"])
_authorization = st.one_of(
    _keys.map(lambda k: b"Bearer " + k.encode()),
    st.tuples(_keys, _value_bytes).map(lambda kv: b"Bearer " + kv[0].encode() + kv[1][:3]),
    st.tuples(_keys, st.sampled_from([b"\x01", b"\x00", b"\x7f", b"\xe9", b"\xff\xfe"])).map(
        lambda kv: b"Bearer " + kv[0].encode() + kv[1]
    ),
    st.sampled_from([b"Bearer caf\xe9", b"Basic " + TEAM_KEY.encode(), b"", b"Bearer"]),
)
_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_known_header = st.sampled_from(
    [b"X-Request-Id", b"X-Latency-Budget-Ms", b"Cache-Control", b"Content-Type", b"X-Y"]
)
_extra_header = st.one_of(
    st.tuples(_known_header, _printable.map(str.encode)),
    st.tuples(_known_header, st.sampled_from([b"5", b"no-cache", b"application/json"])),
    st.tuples(_known_header, _value_bytes),
    st.tuples(st.binary(min_size=1, max_size=12).filter(lambda b: b":" not in b), _value_bytes)
    .map(lambda nv: (nv[0].replace(b"\r", b"").replace(b"\n", b"") or b"X", nv[1])),
    st.just((b"X-Long", b"a" * 9000)),
)


def _body(doc_count: int, extra: dict[str, Any]) -> bytes:
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS * doc_count, **extra}
    return json.dumps(body).encode()  # json, not orjson: integers past 64 bits too


_bodies = st.one_of(
    st.builds(
        _body,
        st.integers(1, 150),
        st.dictionaries(
            st.sampled_from(["top_n", "max_tokens_per_doc", "priority", "max_chunks_per_doc"]),
            st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.sampled_from([1e300]),
            max_size=2,
        ),
    ),
    st.builds(lambda d: _body(1, {"model": d}), st.sampled_from([*DOCS, "local-bm25", ""])),
    st.builds(lambda q: _body(1, {"query": q}), st.sampled_from([QUERY * 40, 5, None])),
    st.builds(lambda n: _body(1, {})[:n], st.integers(0, 60)),  # truncated JSON
    st.binary(max_size=64),
)
_ENCODERS: dict[str, Any] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}
_encoding = st.sampled_from([None, "gzip", "deflate", "br", "zstd", "compress"])


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, str, bool]:
    """(request bytes, method, whether a latency budget was sent)."""
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "P\x01ST"]))
    path = draw(
        st.sampled_from(
            ["/v2/rerank"] * 6
            + ["/v1/rerank", "/admin/usage?team=search", "/nowhere", "/v2/rerank?%ff", "/%00"]
        )
    )
    headers = [(b"Host", b"127.0.0.1")]
    auth = draw(st.none() | _authorization)
    if auth is not None:
        headers.append((b"Authorization", auth))
    headers += draw(st.lists(_extra_header, max_size=3))
    body = draw(_bodies) if method != "GET" else b""
    encoding = draw(_encoding)
    if encoding is not None and body:
        broken = draw(st.booleans())
        encode = _ENCODERS.get(encoding)
        if encode is not None and not broken:
            body = encode(body)
        headers.append((b"Content-Encoding", encoding.encode()))
    if body or method == "POST":
        headers.append((b"Content-Length", str(len(body)).encode()))
    head = method.encode() + b" " + path.encode() + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    budget = any(name == b"X-Latency-Budget-Ms" for name, _ in headers)
    return head + b"\r\n" + body, method, budget


# --- the run and the scan -------------------------------------------------------------


def test_generated_raw_http_gets_json_answers_and_leaves_clean_json_logs(
    gateway: tuple[str, GatewayProcess],
) -> None:
    url, proc = gateway
    stats = {"cases": 0, "reused": 0, "statuses": set()}
    conn: list[RawConnection | None] = [None]
    prev: list[Any] = []

    @CASES
    @given(case=raw_requests())
    def one(case: tuple[bytes, str, bool]) -> None:
        data, method, budget = case
        reused = conn[0] is not None
        if conn[0] is None:
            conn[0] = RawConnection(url)
        try:
            answer = conn[0].exchange(data, "GET" if method == "GET" else "POST")
        except (OSError, http.client.HTTPException) as exc:
            conn[0].close()
            conn[0] = None
            # On a reused connection too: the server kept it open, so it must work. The
            # cause is often the previous request on it (shown: hypothesis cannot replay it).
            raise AssertionError(f"no answer; previous on this connection: {prev}") from exc
        stats["cases"] += 1
        prev[:] = [data[:300], answer.status]
        stats["reused"] += reused
        stats["statuses"].add(answer.status)
        assert answer.status < 500 or (budget and answer.status == 504), answer.body[:300]
        assert answer.headers["Content-Type"].startswith("application/json"), answer.body[:200]
        payload = orjson.loads(answer.body)
        if answer.status >= 400:
            assert set(payload) == {"id", "message"}, payload
            assert payload["id"] == answer.headers["X-Request-Id"]
        if answer.will_close:
            conn[0].close()
            conn[0] = None

    one()
    if conn[0] is not None:
        conn[0].close()
    assert proc.stop() == 0
    print(f"\nraw HTTP property: {stats['cases']} generated cases, {stats['reused']} on a "
          f"reused keep-alive connection, statuses {sorted(stats['statuses'])}")
    assert stats["cases"] >= 300 and stats["reused"] > 0
    assert {200, 400, 401}.issubset(stats["statuses"])

    lines = [line for line in proc.raw if line.strip()]
    assert len(lines) > stats["cases"] // 2  # the access log was written
    events: Counter[str] = Counter()
    for line in lines:
        entry = json.loads(line)  # every line is JSON: no plain text, no traceback
        assert isinstance(entry, dict) and "event" in entry, line
        events[str(entry["event"])[:60]] += 1
    print(f"log events: {dict(events)}")
    joined = "".join(lines)
    found = [secret for secret in SECRETS if secret in joined]
    print(f"log scan: {len(lines)} lines, secrets found: {found}")
    assert found == []
