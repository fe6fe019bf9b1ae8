"""The HTTP plumbing every remote provider shares: one keep-alive connection pool per
upstream (providers/http1.py), exceptions mapped to `ProviderError`, error bodies and
`Retry-After` parsed.

Every message built here from upstream text is scrubbed of credentials (`providers.redact`)
with the values of the credential headers the request carried, and bounded: an upstream
that echoes its request must not hand the provider's key to a caller or a log.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from annotated_types import Ge
from multidict import CIMultiDict, CIMultiDictProxy

from providers.http1 import (
    ConnectionPool,
    Disconnected,
    ResponseError,
    parse_target,
    request_head,
)
from providers.redact import redact, secret_values
from providers.types import (
    AUTH,
    CONNECT,
    MALFORMED,
    STATUS,
    TIMEOUT,
    ErrorKind,
    ProviderError,
    is_retryable_status,
)

# Headers upstreams use to name their request, in the order we look for them.
REQUEST_ID_HEADERS = (
    "x-debug-trace-id",  # Cohere
    "x-amzn-requestid",  # AWS
    "opc-request-id",  # OCI
    "apim-request-id",  # Azure
    "x-request-id",
)
_MAX_ERROR_BODY = 4096  # bytes of an upstream error body worth reading
_MAX_REQUEST_ID = 128  # an upstream's request id, as logged
_MAX_CODE = 64  # an upstream's error code, as logged and shown



@dataclass(kw_only=True)
class UpstreamOptions:
    """What the options of every upstream that is called over HTTP have: how long one call
    may take, and how many connections its pool may open (the rest wait for one). Each
    provider's options class adds its own (endpoint, credentials, batch size) and its
    `type`, which picks the class in the config. Keyword-only, so a subclass's required
    fields may follow them."""

    timeout_s: Annotated[float, Ge(0.001)] = 30.0
    max_connections: Annotated[int, Ge(1)] = 1024

class HttpResponse:
    """Status, headers and the whole body of one upstream answer, and the headers of the
    request it answers (`sent`: what an echo of the request could quote)."""

    __slots__ = ("body", "headers", "sent", "status")

    def __init__(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes,
        sent: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.sent: Mapping[str, str] = sent or {}

    @property
    def request_id(self) -> str | None:
        for name in REQUEST_ID_HEADERS:
            value = self.headers.get(name)
            if value:
                return value[:_MAX_REQUEST_ID]
        return None

    def secrets(self) -> list[str]:
        """The credentials the request carried (read on error paths only)."""
        return secret_values(self.sent)

    def scrubbed(self, text: str, limit: int) -> str:
        return redact(text, self.secrets(), limit)


class HttpTransport:
    """A keep-alive connection pool to one upstream, opened on the running loop.

    `on_pool_wait` (set by whoever counts it) is called for each call that finds all
    `max_connections` in use and so queues for one: the sign that the pool binds.
    """

    def __init__(self, label: str, max_connections: int = 1024) -> None:
        self.label = label  # the provider's name, used in error messages
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self.on_pool_wait: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = ConnectionPool(self._max_connections, keepalive_s=60.0)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def post(
        self,
        url: Any,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        trace: Sequence[tuple[str, str]] = (),
    ) -> HttpResponse:
        """POST `body` as given (signed bytes stay the sent bytes) and read the answer.

        `url` is a string or a yarl URL, sent as it is encoded. `trace` adds the attempt's
        trace context headers; signatures never cover them."""
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        if timeout_s <= 0:
            raise ProviderError(
                f"{self.label}: no time left in the request deadline",
                kind=TIMEOUT,
                retryable=False,
            )
        if trace:
            headers = {**headers, **dict(trace)}
        try:
            target = parse_target(str(url))
            head = request_head(target, headers, len(body))
        except ValueError as exc:
            raise ProviderError(
                f"cannot call {self.label}: {exc}", kind=CONNECT, retryable=False
            ) from exc
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._pool.request(target, head, body, self.on_pool_wait)
        except TimeoutError as exc:
            raise ProviderError(
                f"{self.label} did not answer within {timeout_s:.3g} s",
                kind=TIMEOUT,
                retryable=True,
            ) from exc
        except (ResponseError, Disconnected) as exc:
            if isinstance(exc, Disconnected) and exc.before_answer:
                raise _unreachable(self.label, exc) from exc
            # Our own words, but they can quote a header value the upstream chose.
            what = redact(str(exc), secret_values(headers), limit=200)
            raise ProviderError(
                f"{self.label} sent an incomplete or invalid response ({what})",
                kind=MALFORMED,
                retryable=True,
            ) from exc
        except OSError as exc:  # refused, reset, DNS, TLS (ssl.SSLError is an OSError)
            raise _unreachable(self.label, exc) from exc
        return HttpResponse(
            answer.status, CIMultiDictProxy(CIMultiDict(answer.headers)), answer.body, headers
        )


def _unreachable(label: str, exc: OSError) -> ProviderError:
    return ProviderError(
        f"cannot reach {label}: {exc.__class__.__name__}", kind=CONNECT, retryable=True
    )


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (delta seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_detail(body: bytes, secrets: Sequence[str] = ()) -> tuple[str | None, str | None]:
    """(code, message) from the error envelopes upstreams use, scrubbed of `secrets` and of
    anything else that looks like a credential (`providers.redact`), and bounded.

    Cohere `{"message"}`, Azure and OpenAI-style servers `{"error": {"code", "message"}}`,
    OCI `{"code", "message"}`, AWS `{"message"}` or `{"Message"}`, TEI `{"error",
    "error_type"}`, FastAPI `{"detail": str | [{"loc", "msg"}]}` (Infinity, Voyage).
    Non-JSON bodies give their first line as message.
    """
    code, message = _raw_detail(body[:_MAX_ERROR_BODY])
    return (
        redact(code, secrets, _MAX_CODE) if code else None,
        redact(message, secrets) if message else None,
    )


def _raw_detail(snippet: bytes) -> tuple[str | None, str | None]:
    try:
        data = orjson.loads(snippet)
    except orjson.JSONDecodeError:
        text = snippet.decode("utf-8", "replace").strip().splitlines()
        return None, (text[0] if text else None)
    if not isinstance(data, dict):
        return None, None
    inner = data.get("error")
    if isinstance(inner, dict):
        data = inner
    elif isinstance(inner, str) and "message" not in data:
        data = {"message": inner, "code": data.get("error_type")}
    elif "detail" in data and "message" not in data:
        data = {"message": _fastapi_detail(data["detail"])}
    code = data.get("code") or data.get("Code") or data.get("__type")
    if type(code) is int and isinstance(data.get("type"), str):
        code = data["type"]  # OpenAI-style servers (vLLM, Infinity) repeat the status as code
    message = data.get("message") or data.get("Message")
    # The code is logged: bounded (by the caller), as an upstream could put anything there.
    return (str(code) if code else None), (_first_line(str(message)) if message else None)


def _fastapi_detail(detail: Any) -> str | None:
    """FastAPI's `detail`: a string, or validation errors `[{"loc": [...], "msg": ...}]`."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        msg = str(first.get("msg", "invalid request"))
        more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
        return f"{where}: {msg}{more}" if where else f"{msg}{more}"
    return None


def _first_line(message: str) -> str | None:
    # Later lines can hold what must not reach a caller: AWS signature errors append the
    # canonical request, security token header included.
    lines = message.strip().splitlines()
    return lines[0] if lines else None


def status_error(
    label: str,
    resp: HttpResponse,
    code: str | None = None,
    *,
    kind: ErrorKind | None = None,
    retryable: bool | None = None,
    note: str | None = None,
) -> ProviderError:
    """The ProviderError for an upstream error status.

    By default 401/403 are AUTH and `is_retryable_status` decides retries; providers whose
    error codes say more (quota, model errors) pass `kind` / `retryable`; `note` is
    appended to the message (what to change).
    """
    secrets = resp.secrets()
    body_code, message = error_detail(resp.body, secrets)
    code = redact(code, secrets, _MAX_CODE) if code else body_code
    status = resp.status
    detail = f": {message}" if message else ""
    return ProviderError(
        f"{label} answered {status}{f' {code}' if code else ''}{detail}"
        + (f" ({note})" if note else ""),
        kind=kind or (AUTH if status in (401, 403) else STATUS),
        retryable=is_retryable_status(status) if retryable is None else retryable,
        status=status,
        code=code,
        retry_after_s=parse_retry_after(resp.headers),
        upstream_request_id=_request_id(resp),
    )


def _request_id(resp: HttpResponse | None) -> str | None:
    request_id = resp.request_id if resp is not None else None
    return resp.scrubbed(request_id, _MAX_REQUEST_ID) if resp and request_id else None


def load_json(label: str, resp: HttpResponse) -> Any:
    """Decode a 2xx body, or raise a retryable MALFORMED error."""
    try:
        return orjson.loads(resp.body)
    except orjson.JSONDecodeError as exc:
        raise malformed(label, "a body that is not JSON", resp) from exc


def malformed(label: str, what: str, resp: HttpResponse | None = None) -> ProviderError:
    """A 2xx answer we cannot use; `what` may quote the upstream's values, so it is scrubbed."""
    return ProviderError(
        f"{label} sent {resp.scrubbed(what, 200) if resp is not None else redact(what)}",
        kind=MALFORMED,
        retryable=True,
        status=resp.status if resp else None,
        upstream_request_id=_request_id(resp),
    )


def scores_from_ranks(
    label: str,
    ranks: Any,
    count: int,
    *,
    score_key: str = "relevance_score",
    resp: HttpResponse | None = None,
) -> list[float]:
    """Turn `[{index, <score_key>}]` into a list aligned with the documents sent.

    Every document must be scored exactly once (we never ask upstream for a top_n).
    """
    if not isinstance(ranks, list):
        raise malformed(label, "a response without a results list", resp)
    scores: list[float | None] = [None] * count
    for item in ranks:
        if type(item) is not dict:
            raise malformed(label, "a result that is not an object", resp)
        index, score = item.get("index"), item.get(score_key)
        # type() rather than isinstance(): JSON gives exact types, and bool is not an index.
        if type(index) is not int or not 0 <= index < count or scores[index] is not None:
            raise malformed(label, f"a result with an invalid index {index!r}", resp)
        if type(score) is float:
            scores[index] = score
        elif type(score) is int:
            scores[index] = float(score)
        else:
            raise malformed(label, f"a result with an invalid score {score!r}", resp)
    if None in scores:
        missing = scores.count(None)
        raise malformed(label, f"scores for only {count - missing} of {count} documents", resp)
    return scores  # type: ignore[return-value]  # no None left


def check_http_url(name: str, value: str | None) -> None:
    """Config validation: `value`, when set, is an http(s) URL (ValueError naming `name`)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} must start with http:// or https:// (got {value!r})")


class HttpProvider:
    """What every HTTP provider starts with: its URL, pooled transport and JSON headers
    (with a Bearer key when one is set); subclasses add `rerank`."""

    type = ""
    batch_relative = False

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options
        self.url = options.base_url.rstrip("/") + options.path
        self.transport = HttpTransport(name, options.max_connections)
        self.headers = bearer_headers(options.api_key)

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()


def check_endpoint(base_url: str, path: str | None) -> None:
    """Config validation of an upstream's `base_url` and `path` (ValueError naming them)."""
    check_http_url("base_url", base_url)
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path must start with / (got {path!r})")


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """JSON request headers, with `Authorization: Bearer <key>` when a key is set."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def count_or_none(value: Any) -> int | None:
    """A non-negative whole count from a usage field or header, else None."""
    if isinstance(value, str):
        value = int(value) if value.isdigit() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None
