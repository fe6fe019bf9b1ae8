"""Property-based fuzzing of the HTTP edge: whatever a caller sends, the answer is a
well-formed Cohere response or a Cohere-shaped 4xx, never a 5xx or a stack trace.

The gateway runs in-process (the fake Cohere and the offline BM25 model behind it);
requests go out over a raw `http.client` connection so bodies can be any bytes
(duplicate keys, invalid UTF-8) and headers any value HTTP allows.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http.openapi import public_spec
from tests.conftest import ADMIN_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere

RERANK_PATHS = ("/v2/rerank", "/v1/rerank", "/v1/v2/rerank")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Client:
    """One keep-alive connection to the gateway (reopened if the server closed it)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.conn.close()
                return resp.status, resp.headers, data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt:
                    raise
            except BaseException:
                self.conn.close()  # a half-sent request must not poison the next one
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def fuzz_client(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> Iterator[Client]:
    client = Client(start_gateway(gateway_config({"cohere-a": fake_cohere[1]})))
    yield client
    client.close()


def _schema(name: str) -> dict[str, Any]:
    spec = public_spec()
    return {**spec["components"]["schemas"][name], "components": spec["components"]}


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "message": {"type": "string", "minLength": 1}},
    "required": ["id", "message"],
    "additionalProperties": False,
}


def assert_cohere_answer(
    status: int, headers: http.client.HTTPMessage, body: bytes, *, deadline_set: bool = False
) -> Any:
    """2xx or 4xx, JSON, and an error is exactly `{"id","message"}`. A caller who set
    X-Latency-Budget-Ms may get 504 when that deadline passes (a timeout, as promised)."""
    assert status < 500 or (deadline_set and status == 504), (status, body[:500])
    assert headers.get("Content-Type", "").startswith("application/json"), (status, body[:200])
    data = orjson.loads(body)
    if status >= 400:
        jsonschema.validate(data, ERROR_SCHEMA)
    return data


# --- strategies ------------------------------------------------------------------------

_odd_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30
) | st.sampled_from(["", " ", "\u0000", "\ufeff", "💥" * 5, "a" * 3000])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 2, -1, 1.0, 2.5, 1e308, 2**63, 2**64])
    | _odd_text
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_odd_text, inner, max_size=4),
    max_leaves=12,
)
_documents = st.lists(
    _odd_text
    | st.fixed_dictionaries({"text": _json})
    | st.dictionaries(st.sampled_from(["text", "title", "body"]), _json, max_size=3)
    | _json,
    max_size=6,
)
_fields = {
    "model": st.sampled_from(["rerank-v3.5", "local-bm25", "nope", ""]) | _json,
    "query": st.sampled_from(["what is fuzzing", "  "]) | _json,
    "documents": _documents | _json,
    "top_n": _json,
    "max_tokens_per_doc": _json,
    "priority": _json,
    "rank_fields": st.lists(st.sampled_from(["text", "title", "nope"]), max_size=3) | _json,
    "return_documents": _json,
    "max_chunks_per_doc": _json,
    "relevant_spans": st.fixed_dictionaries({"mode": _json}) | _json,
    "unknown_field": _json,
}


@st.composite
def rerank_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid bodies with some fields replaced by arbitrary JSON."""
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["rerank-v3.5", "local-bm25"])),
        "query": "what is fuzzing",
        "documents": ["fuzzing finds bugs", "a quiet afternoon"],
    }
    for key in draw(st.lists(st.sampled_from(sorted(_fields)), max_size=4, unique=True)):
        body[key] = draw(_fields[key])
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2, unique=True)):
        del body[key]
    return body


def _raw(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


_raw_bodies = (
    rerank_bodies().map(_raw)
    | _json.map(_raw)
    | st.binary(max_size=64)
    | st.sampled_from(
        [
            b"",
            b"{",
            b'{"model": "local-bm25", "model": 5, "query": "q", "documents": ["d"]}',
            b'{"model": "local-bm25", "query": "q\xff\xfe", "documents": ["d"]}',
            b'{"model": "local-bm25", "query": "\\ud800", "documents": ["\\udfff"]}',
            b'{"model": "local-bm25", "query": "q", "documents": ["d"], "top_n": NaN}',
            b'{"model": "local-bm25", "query": "q", "documents": ["d"], "top_n": 1e999}',
            b'{"model": "local-bm25", "query": "q", "documents": ["d"], "top_n": '
            + b"9" * 5000
            + b"}",
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 2000 + b"1" + b"}" * 2000,
            b"\xef\xbb\xbf{}",
        ]
    )
)
# Header values as http.client sends them (latin-1), control characters included: aiohttp's
# parser rejects those before any route runs, and the gateway's protocol handler answers
# in Cohere's shape (tests/gateway/observe/test_fuzz_logs.py sends raw bytes too).
_header_text = st.text(
    st.characters(min_codepoint=0x01, max_codepoint=0xFF, exclude_characters="\r\n"), max_size=60
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from(
            [f"Bearer {TEAM_KEY}", f"bearer   {TEAM_KEY}  ", "Bearer", "Bearer ", "Basic x", ""]
        )
        | _header_text,
        "X-Latency-Budget-Ms": st.sampled_from(["1", "0", "-5", "1.5", "\u00b2", "9" * 5000, " 7 "])
        | _header_text,
        "Cache-Control": st.sampled_from(["no-cache", "no-store", ",,,", "max-age=-1"])
        | _header_text,
        "X-Request-Id": _header_text | st.sampled_from(["a" * 200, "\u00e9\u00ff"]),
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/json; charset=latin-1", "x/y"]
        )
        | _header_text,
    },
)


def _latin1(headers: dict[str, str]) -> dict[str, str]:
    # http.client sends header values as latin-1; strip what HTTP forbids in a value.
    return {k: v.strip() for k, v in headers.items() if "\r" not in v and "\n" not in v}


# --- the properties --------------------------------------------------------------------


@FUZZ
@given(path=st.sampled_from(RERANK_PATHS), body=_raw_bodies, headers=_headers)
def test_rerank_never_answers_5xx_and_errors_are_cohere_shaped(
    fuzz_client: Client, path: str, body: bytes, headers: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {TEAM_KEY}", **_latin1(headers)}
    status, resp_headers, raw = fuzz_client.send("POST", path, body, headers)
    deadline_set = "X-Latency-Budget-Ms" in headers
    data = assert_cohere_answer(status, resp_headers, raw, deadline_set=deadline_set)
    if status == 200:
        jsonschema.validate(data, _schema("RerankResponse"))
        assert resp_headers["X-Request-Id"]


@FUZZ
@given(body=rerank_bodies(), headers=_headers)
def test_well_formed_json_bodies_are_answered_per_the_schema(
    fuzz_client: Client, body: dict[str, Any], headers: dict[str, str]
) -> None:
    headers = {**_latin1(headers), "Authorization": f"Bearer {TEAM_KEY}"}
    status, resp_headers, raw = fuzz_client.send("POST", "/v2/rerank", _raw(body), headers)
    deadline_set = "X-Latency-Budget-Ms" in headers
    data = assert_cohere_answer(status, resp_headers, raw, deadline_set=deadline_set)
    if status == 200:
        jsonschema.validate(data, _schema("RerankResponse"))
        assert len(data["results"]) <= len(body["documents"])


_query_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@FUZZ
@given(
    params=st.dictionaries(st.sampled_from(["from", "to", "team", "x"]), _query_value, max_size=3),
    raw_tail=st.sampled_from(["", "&from", "&from=&to=", "&%ff=%fe", "&from=%00", "&to=9" * 3]),
    authorization=st.sampled_from([f"Bearer {ADMIN_KEY}", f"Bearer {TEAM_KEY}", ""]),
    path=st.sampled_from(["/admin/usage", "/admin/deployments", "/admin/openapi.json"]),
)
def test_admin_routes_never_answer_5xx(
    fuzz_client: Client, params: dict[str, str], raw_tail: str, authorization: str, path: str
) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items()) + raw_tail
    headers = {"Authorization": authorization} if authorization else {}
    status, resp_headers, raw = fuzz_client.send("GET", f"{path}?{query}", None, headers)
    assert_cohere_answer(status, resp_headers, raw)


# --- regressions the fuzzing found -----------------------------------------------------


async def _post_raw(url: str, body: Any, headers: dict[str, str]) -> tuple[int, str, bytes]:
    # expect100: the body goes out only once the gateway's handler is reading it, so the
    # body error surfaces there (not in aiohttp's parser, which answers text/plain).
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers, expect100=True) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_undecodable_content_encoding_is_a_cohere_400(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], encoding: str
) -> None:
    """Was a 500: aiohttp's RequestPayloadError escaped the pipeline."""
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))
    headers = {"Authorization": f"Bearer {TEAM_KEY}", "Content-Encoding": encoding}
    body = b'{"model": "local-bm25", "query": "q", "documents": ["d"]}'
    status, content_type, raw = await _post_raw(url + "/v2/rerank", body, headers)
    assert status == 400
    assert content_type.startswith("application/json")
    message = orjson.loads(raw)["message"]
    assert message.startswith("invalid request: the request body could not be read (")
    assert f"content-encoding: {encoding}" in message


async def test_chunked_body_over_the_limit_is_a_cohere_413(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(
        gateway_config({"cohere-a": fake_cohere[1]}, server={"max_body_bytes": 2048})
    )

    async def chunks():  # no Content-Length: chunked transfer encoding
        yield b'{"model": "local-bm25", "query": "q", "documents": ['
        for _ in range(100):
            yield b'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",'
        yield b'"x"]}'

    headers = {"Authorization": f"Bearer {TEAM_KEY}"}
    status, content_type, raw = await _post_raw(url + "/v2/rerank", chunks(), headers)
    assert status == 413
    assert content_type.startswith("application/json")
    assert "the limit is 2048 bytes" in orjson.loads(raw)["message"]


async def test_a_chunked_body_in_many_pieces_is_read_whole(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))

    async def chunks():  # each piece its own chunk: the body is their concatenation
        yield b'{"model": "local-bm25", "query": "doc", "documents": ['
        for i in range(40):
            yield b'"doc %d",' % i
        yield b'"last"]}'

    headers = {"Authorization": f"Bearer {TEAM_KEY}"}
    status, _, raw = await _post_raw(url + "/v2/rerank", chunks(), headers)
    assert status == 200
    assert sorted(r["index"] for r in orjson.loads(raw)["results"]) == list(range(41))


@pytest.mark.parametrize("value", ["9" * 5000, "1" * 10])
async def test_huge_latency_budget_is_a_cohere_400(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str], value: str
) -> None:
    """Was a 500: int() refuses strings over 4300 digits (ValueError in parse_budget)."""
    url = start_gateway(gateway_config({"cohere-a": fake_cohere[1]}))
    headers = {"Authorization": f"Bearer {TEAM_KEY}", "X-Latency-Budget-Ms": value}
    body = b'{"model": "local-bm25", "query": "q", "documents": ["d"]}'
    status, content_type, raw = await _post_raw(url + "/v2/rerank", body, headers)
    assert status == 400
    assert content_type.startswith("application/json")
    assert "at most 9 digits" in orjson.loads(raw)["message"]
