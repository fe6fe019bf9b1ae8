"""A lean Redis score store: RESP spoken directly over one pipelined asyncio connection.

Why not redis-py here: the score cache sends a few fixed commands (MGET, SET PX, SET NX,
EXISTS, DEL) on the request path, and redis-py's generic machinery (a pooled connection
checked out per call, every argument encoded one by one, a retry wrapper, a reply
callback) cost more per Redis hit than a cache miss costs with the memory store
(docs/performance.md). Here one connection carries every call, pipelined: a call writes
its command and waits for its replies in order. Commands are built with one `join` over
the keys (keys of one request share their length), replies are parsed by hiredis (C),
and a full hit, every value an 8-byte double, is decoded by one `struct.unpack`.
So a Redis hit is one round trip and no per-key Python work.

It speaks to one server (`redis://` or `unix://`, password, username, db); Sentinel,
Cluster and TLS stay with redis-py (`RedisStore`), which the gateway picks for them
(`gateway.state.score_cache.build_store`). Failures keep `RedisStore`'s contract: a
call bounded by `timeout_s` that fails reads as a miss (writes are dropped), is reported
to `on_error`, and Redis is left alone for `backoff_s`. A connection that timed out,
broke or sent what hiredis cannot parse is closed; the next call after the back-off
opens a new one.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from policies.cache.redis_store import FAILURES, RedisBase, _unpack

_DOUBLE = struct.Struct("<d")
SCHEMES = ("redis", "unix")  # what this store serves; other URLs stay with redis-py


@dataclass(frozen=True, slots=True)
class Address:
    """One Redis server, from a `redis://` or `unix://` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"not a redis:// or unix:// URL: {parts.scheme}://")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        if parts.scheme == "unix":
            return cls(
                path=unquote(parts.path),
                username=username,
                password=password,
                db=int(query.get("db", "0")),
            )
        path = parts.path.strip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=username,
            password=password,
            db=int(path or query.get("db", "0")),
        )


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP (hiredis builds it in C)."""
    return bytes(hiredis.pack_command(args))  # type: ignore[arg-type]  # any length


class _Waiter:
    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[object]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[object] = []


class _Protocol(asyncio.Protocol):
    """Feeds what arrives to hiredis and hands each waiter its replies, in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        try:
            reply = reader.gets()
            while reply is not False:
                if not waiters:  # a reply nobody asked for: the stream is out of step
                    raise hiredis.ProtocolError("unexpected reply")
                waiter = waiters[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.count:
                    waiters.popleft()
                    if not waiter.future.done():  # a caller that timed out has gone
                        waiter.future.set_result(waiter.replies)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"invalid reply from Redis: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("connection to Redis lost"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(exc)


class RespConnection:
    """One pipelined connection, opened when first needed and again after it broke."""

    def __init__(self, address: Address, connect_timeout_s: float) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, payload: bytes, replies: int = 1) -> list[object]:
        """Send `payload` (one or more commands) and return its `replies` replies; a
        Redis error reply raises `ResponseError`."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await _send(protocol, payload, replies)

    def reset(self) -> None:
        """Drop the connection (it timed out: it may be stuck); the next call reconnects."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    async def close(self) -> None:
        self.reset()

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent callers share one new connection
            protocol = self._protocol
            if protocol is not None and not protocol.closed:
                return protocol
            loop = asyncio.get_running_loop()
            a = self.address
            async with asyncio.timeout(self.connect_timeout_s):
                if a.path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, a.path)
                else:
                    _, protocol = await loop.create_connection(_Protocol, a.host, a.port)
                try:
                    await self._hello(protocol)
                except BaseException:
                    assert protocol.transport is not None
                    protocol.transport.abort()
                    raise
            self._protocol = protocol
            return protocol

    async def _hello(self, protocol: _Protocol) -> None:
        a = self.address
        if a.password is not None:
            auth = ("AUTH", a.username, a.password) if a.username else ("AUTH", a.password)
            await _send(protocol, pack(*auth), 1)
        if a.db:
            await _send(protocol, pack("SELECT", a.db), 1)


async def _send(protocol: _Protocol, payload: bytes, replies: int) -> list[object]:
    future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
    protocol.waiters.append(_Waiter(future, replies))
    assert protocol.transport is not None
    protocol.transport.write(payload)
    found = await future
    for reply in found:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
    return found


def mget(prefix: bytes, keys: Sequence[bytes]) -> bytes:
    """MGET of `prefix + key` for each key: one join when the keys share a length (a
    request's digests always do)."""
    size = len(keys[0])
    if any(len(k) != size for k in keys):
        return pack("MGET", *[prefix + k for k in keys])
    part = b"$%d\r\n%s" % (len(prefix) + size, prefix)
    return b"*%d\r\n$4\r\nMGET\r\n%s%s\r\n" % (len(keys) + 1, part, (b"\r\n" + part).join(keys))


def decode(values: list[object]) -> list[float | None]:
    """MGET's values as scores: all present and 8 bytes long (a full hit) in one unpack."""
    count = len(values)
    if count and None not in values:
        joined = b"".join(values)  # type: ignore[arg-type]  # bytes: None is not among them
        if len(joined) == 8 * count and max(map(len, values)) == 8:  # type: ignore[arg-type]
            return list(struct.unpack(f"<{count}d", joined))
    return [_unpack(v) for v in values]


class RespStore(RedisBase[RespConnection]):
    """`RedisStore`'s contract (reads, writes, fleet leases) on a `RespConnection`."""

    async def _call(self, payload: bytes, replies: int = 1) -> list[object] | None:
        """The replies, or None after a failure (reported, and Redis left alone a while)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.client.call(payload, replies)
        except FAILURES as exc:
            if isinstance(exc, (TimeoutError, OSError, RedisConnectionError)):
                self.client.reset()
            self._failed(exc)
            return None

    async def get_many(self, keys: Sequence[bytes], ttl_s: float) -> list[float | None]:
        if not keys or not self._available():
            return [None] * len(keys)
        found = await self._call(mget(self.prefix, keys))
        if found is None:
            return [None] * len(keys)
        return decode(found[0])  # type: ignore[arg-type]  # MGET answers an array

    async def set_many(
        self,
        keys: Sequence[bytes],
        scores: Sequence[float],
        ttl_s: float,
        release: bytes | None = None,
    ) -> None:
        if not keys or not self._available():
            return
        ttl = b"%d" % max(1, int(ttl_s * 1000))
        tail = b"\r\n$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl)
        prefix = self.prefix
        size = len(prefix)
        pack_double = _DOUBLE.pack
        payload = b"".join(
            b"*5\r\n$3\r\nSET\r\n$%d\r\n%s%s\r\n$8\r\n%s%s"
            % (size + len(key), prefix, key, pack_double(score), tail)
            for key, score in zip(keys, scores, strict=True)
        )
        replies = len(keys)
        if release is not None:
            payload += pack("DEL", self._lease_key(release))
            replies += 1
        await self._call(payload, replies)

    async def take_lease(self, lease: bytes, ttl_s: float) -> bool | None:
        if not self._available():
            return None
        ttl = max(1, int(ttl_s * 1000))
        found = await self._call(pack("SET", self._lease_key(lease), b"1", "NX", "PX", ttl))
        return None if found is None else found[0] is not None

    async def peek(self, keys: Sequence[bytes], lease: bytes) -> tuple[list[float | None], bool]:
        if not self._available() or not keys:
            return [None] * len(keys), False
        payload = mget(self.prefix, keys) + pack("EXISTS", self._lease_key(lease))
        found = await self._call(payload, 2)
        if found is None:
            return [None] * len(keys), False
        return decode(found[0]), bool(found[1])  # type: ignore[arg-type]

    async def drop_lease(self, lease: bytes) -> None:
        if self._available():
            await self._call(pack("DEL", self._lease_key(lease)))

    async def close(self) -> None:
        await self.client.close()
