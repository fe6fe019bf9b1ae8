"""The lean Redis score store (policies.cache.resp) against the real server and against
the redis-py store: the same answers and the same bytes in Redis, leases, pipelined
callers, and every failure (an error reply, a dropped connection, no server, a silent
one) read as a miss, reported and backed off, as `RedisStore` does."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.config import parse_config
from gateway.observe.metrics import Metrics
from gateway.state.score_cache import build_store
from policies.cache import Address, KeySpace, RedisStore, RespConnection, RespStore, TieredStore
from policies.cache.memory import MemoryStore
from policies.cache.resp import decode, mget
from tests.conftest import REDIS_URL
from tests.support.servers import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys_for(*docs: str, query: str = "q", tagged: bool = False) -> list[bytes]:
    return KeySpace({"m": "m"}, slot_tag=tagged).document_keys("m", "", query, None, docs)


def resp_store(
    prefix: str,
    url: str = REDIS_URL,
    errors: list[BaseException] | None = None,
    clock: Callable[[], float] | None = None,
    timeout_s: float = 0.5,
    backoff_s: float = 5.0,
) -> RespStore:
    sink = errors if errors is not None else []
    return RespStore(
        RespConnection(Address.from_url(url), timeout_s),
        key_prefix=prefix,
        timeout_s=timeout_s,
        backoff_s=backoff_s,
        on_error=lambda backend, exc: sink.append(exc),
        **({"clock": clock} if clock else {}),
    )


def redis_py_store(prefix: str) -> RedisStore:
    client = aioredis.Redis.from_url(
        REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return RedisStore(
        client, key_prefix=prefix, timeout_s=0.5, backoff_s=5.0, on_error=lambda b, e: None
    )


# --- the same answers as redis-py ----------------------------------------------------


async def test_answers_and_bytes_match_the_redis_py_store(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    lean, classic = resp_store(cache_prefix), redis_py_store(cache_prefix)
    keys = keys_for(*(f"document {i}" for i in range(60)))
    assert await lean.get_many(keys, 60) == [None] * 60  # a full miss
    await lean.set_many(keys[:20], [i / 7 for i in range(20)], 60)  # written by the lean one
    await classic.set_many(keys[20:40], [i / 3 for i in range(20)], 60)  # by redis-py
    for found in (await lean.get_many(keys, 60), await classic.get_many(keys, 60)):
        assert found == [i / 7 for i in range(20)] + [i / 3 for i in range(20)] + [None] * 20
    full = keys[:40]
    assert await lean.get_many(full, 60) == await classic.get_many(full, 60)  # a full hit
    # The same bytes and TTL either way: 8-byte little-endian doubles under prefix + digest.
    for key, score in ((keys[0], 0.0), (keys[1], 1 / 7), (keys[21], 1 / 3)):
        assert redis_client.get(cache_prefix.encode() + key) == struct.pack("<d", score)
    assert 59_000 < redis_client.pttl(cache_prefix.encode() + keys[1]) <= 60_000
    assert await lean.get_many([], 60) == []
    await lean.close()
    await classic.close()


async def test_values_of_another_layout_are_misses_also_among_hits(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    store = resp_store(cache_prefix)
    keys = keys_for("a", "b", "c", "d")
    await store.set_many(keys, [0.1, 0.2, 0.3, 0.4], 60)
    prefix = cache_prefix.encode()
    redis_client.set(prefix + keys[1], b"0.5")  # 3 bytes
    redis_client.set(prefix + keys[2], b"123456789")  # 9 bytes: the total is still 32
    assert await store.get_many(keys, 60) == [0.1, None, None, 0.4]
    assert await redis_py_store(cache_prefix).get_many(keys, 60) == [0.1, None, None, 0.4]
    await store.close()


async def test_keys_of_several_lengths_and_tagged_keys(cache_prefix: str) -> None:
    store, classic = resp_store(cache_prefix), redis_py_store(cache_prefix)
    tagged = keys_for("x", "y", tagged=True)
    mixed = [*keys_for("z"), *tagged]  # 16- and 34-byte keys in one request
    await store.set_many(mixed, [1.5, -2.0, 3.25], 60)
    assert await store.get_many(mixed, 60) == [1.5, -2.0, 3.25]
    assert await classic.get_many(mixed, 60) == [1.5, -2.0, 3.25]
    assert mget(b"p:", mixed) == redis_command("MGET", *(b"p:" + k for k in mixed))
    assert mget(b"p:", tagged) == redis_command("MGET", *(b"p:" + k for k in tagged))
    await store.close()


def redis_command(*args: bytes | str) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def test_decode_takes_the_one_unpack_path_only_for_a_full_hit_of_doubles() -> None:
    doubles = [struct.pack("<d", x) for x in (0.5, -1.0, 1e-300)]
    assert decode(list(doubles)) == [0.5, -1.0, 1e-300]
    assert decode([doubles[0], None, doubles[2]]) == [0.5, None, 1e-300]
    assert decode([b"1234567", b"123456789"]) == [None, None]  # 16 bytes, not two doubles
    assert decode([]) == []


async def test_leases_match_the_redis_py_store(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    lean, classic = resp_store(cache_prefix), redis_py_store(cache_prefix)
    keys = keys_for("a", "b")
    assert await lean.take_lease(b"one", 5) is True
    assert await lean.take_lease(b"one", 5) is False
    assert await classic.take_lease(b"one", 5) is False  # the same key either way
    assert await lean.peek(keys, b"one") == ([None, None], True)
    assert await lean.peek(keys, b"one") == await classic.peek(keys, b"one")
    await lean.set_many(keys, [0.25, 0.75], 60, release=b"one")  # scores land, lease dropped
    assert await lean.peek(keys, b"one") == ([0.25, 0.75], False)
    assert await classic.take_lease(b"two", 5) is True
    await lean.drop_lease(b"two")
    assert redis_client.exists(cache_prefix + "lease:two") == 0
    assert redis_client.exists(cache_prefix + "lease:one") == 0
    await lean.close()
    await classic.close()


async def test_concurrent_callers_each_get_their_own_replies(cache_prefix: str) -> None:
    store = resp_store(cache_prefix)
    batches = [keys_for(*(f"doc {b}-{i}" for i in range(10))) for b in range(40)]
    await asyncio.gather(
        *(store.set_many(k, [b + i / 10 for i in range(10)], 60) for b, k in enumerate(batches))
    )
    found = await asyncio.gather(*(store.get_many(k, 60) for k in batches))
    assert found == [[b + i / 10 for i in range(10)] for b in range(40)]
    await store.close()


async def test_the_tiered_store_takes_the_lean_store(cache_prefix: str) -> None:
    shared = resp_store(cache_prefix)
    tiered = TieredStore(MemoryStore(max_entries=10), shared)
    k = keys_for("a", "b")
    await shared.set_many([k[1]], [0.5], 60)
    assert await tiered.get_many(k, 60) == [None, 0.5]
    assert tiered.memory.get_now([k[1]]) == [0.5]
    await tiered.close()


# --- failures ------------------------------------------------------------------------


async def fake_server(
    answer: Callable[[bytes], bytes | None],
) -> tuple[asyncio.Server, int, list[bytes]]:
    """A loopback server that answers each read with `answer(data)` (None: stays silent,
    b"": closes the connection) and keeps what it received."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            reply = answer(data)
            if reply == b"":
                break
            if reply is not None:
                writer.write(reply)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], received


async def closing(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def test_an_error_reply_is_a_miss_reported_then_backed_off() -> None:
    server, port, _ = await fake_server(lambda data: b"-ERR out of luck\r\n")
    clock, errors = FakeClock(), []
    store = resp_store("p:", f"redis://127.0.0.1:{port}/0", errors, clock)
    keys = keys_for("a", "b")
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 1 and isinstance(errors[0], redis.ResponseError)
    assert "out of luck" in str(errors[0])
    await store.set_many(keys, [0.1, 0.2], 60)  # within the back-off: not tried
    assert await store.take_lease(b"l", 5) is None
    assert len(errors) == 1
    clock.now += 5
    assert await store.take_lease(b"l", 5) is None  # tried again: the error again
    assert len(errors) == 2
    await store.close()
    await closing(server)


async def test_a_dropped_connection_is_a_miss_at_most_once_then_reconnects(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    clock, errors = FakeClock(), []
    store = resp_store(cache_prefix, errors=errors, clock=clock)
    keys = keys_for("a", "b")
    await store.set_many(keys, [0.1, 0.2], 60)
    protocol = store.client._protocol
    assert protocol is not None and protocol.transport is not None
    host, port = protocol.transport.get_extra_info("sockname")[:2]
    assert redis_client.client_kill(f"{host}:{port}")
    first = await store.get_many(keys, 60)  # the loss may be seen before or by this call
    assert first in ([0.1, 0.2], [None, None])
    assert len(errors) == (1 if first == [None, None] else 0)
    clock.now += 5
    assert await store.get_many(keys, 60) == [0.1, 0.2]  # on a new connection
    assert store.client._protocol is not protocol
    await store.close()


async def test_a_connection_closed_before_the_reply_fails_its_caller() -> None:
    server, port, _ = await fake_server(lambda data: b"")
    errors: list[BaseException] = []
    store = resp_store("p:", f"redis://127.0.0.1:{port}/0", errors)
    assert await store.get_many(keys_for("a", "b"), 60) == [None, None]
    assert len(errors) == 1 and isinstance(errors[0], redis.ConnectionError)
    await store.close()
    await closing(server)


async def test_a_reply_that_never_completes_times_out_and_drops_the_connection() -> None:
    server, port, _ = await fake_server(lambda data: b"*2\r\n$8\r\n")  # half a reply
    errors: list[BaseException] = []
    store = resp_store("p:", f"redis://127.0.0.1:{port}/0", errors, timeout_s=0.2)
    assert await store.get_many(keys_for("a", "b"), 60) == [None, None]
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    assert store.client._protocol is None  # a timed-out connection is not reused
    await store.close()
    await closing(server)


async def test_garbage_from_the_server_is_a_miss_and_closes_the_connection() -> None:
    server, port, _ = await fake_server(lambda data: b"?not resp\r\n")
    errors: list[BaseException] = []
    store = resp_store("p:", f"redis://127.0.0.1:{port}/0", errors)
    assert await store.get_many(keys_for("a"), 60) == [None]
    assert len(errors) == 1 and isinstance(errors[0], redis.ConnectionError)
    await store.close()
    await closing(server)


async def test_unreachable_redis_is_a_miss_then_backs_off_then_retries() -> None:
    clock, errors = FakeClock(), []
    store = resp_store("p:", f"redis://127.0.0.1:{free_port()}/0", errors, clock)
    keys = keys_for("a", "b")
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 1
    await store.set_many(keys, [0.1, 0.2], 60)
    assert await store.peek(keys, b"l") == ([None, None], False)
    assert len(errors) == 1
    clock.now += 5
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 2
    await store.close()


async def test_a_silent_server_is_a_miss_within_the_timeout() -> None:
    server, port, _ = await fake_server(lambda data: None)
    errors: list[BaseException] = []
    store = resp_store("p:", f"redis://127.0.0.1:{port}/0", errors, timeout_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.get_many(keys_for("a"), 60) == [None]
    assert loop.time() - started < 2.0  # bounded by the timeout, not hanging
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    await store.close()
    await closing(server)


# --- connecting ----------------------------------------------------------------------


async def test_password_username_and_db_are_sent_first() -> None:
    server, port, received = await fake_server(
        lambda data: b"+OK\r\n" * data.count(b"*") if data.startswith(b"*") else None
    )
    store = resp_store("p:", f"redis://bob:s%40cret@127.0.0.1:{port}/3")
    await store.drop_lease(b"x")
    sent = b"".join(received)
    auth = redis_command("AUTH", "bob", "s@cret")
    select = redis_command("SELECT", "3")
    assert sent.startswith(auth + select) or sent.startswith(auth)
    assert select in sent and redis_command("DEL", "p:lease:x") in sent
    await store.close()
    await closing(server)


def test_addresses_from_urls() -> None:
    assert Address.from_url("redis://127.0.0.1:6379/0") == Address("127.0.0.1", 6379)
    assert Address.from_url("redis://:pw@cache:6380/2") == Address(
        "cache", 6380, password="pw", db=2
    )
    assert Address.from_url("unix:///run/redis.sock?db=4") == Address(path="/run/redis.sock", db=4)
    for url in ("rediss://h:6379/0", "redis+sentinel://h:26379/svc"):
        try:
            Address.from_url(url)
        except ValueError:
            continue
        raise AssertionError(f"{url} taken")


async def test_a_db_of_its_own_on_the_real_server(redis_client: redis.Redis) -> None:
    store = resp_store("rg-test-db:", url="redis://127.0.0.1:6379/5")
    (key,) = keys_for("in db 5")
    await store.set_many([key], [0.5], 60)
    other = redis.Redis.from_url("redis://127.0.0.1:6379/5")
    try:
        assert other.get(b"rg-test-db:" + key) == struct.pack("<d", 0.5)
        assert redis_client.get(b"rg-test-db:" + key) is None  # not in db 0
    finally:
        other.delete(b"rg-test-db:" + key)
        other.close()
    await store.close()


async def test_the_gateway_takes_the_lean_store_for_one_server_only() -> None:
    cases = {
        "redis://127.0.0.1:6379/0": RespStore,
        "redis+cluster://127.0.0.1:7000": RedisStore,  # redis-py follows the slots
        "redis+sentinel://127.0.0.1:26379/svc": RedisStore,
        "rediss://127.0.0.1:6379/0": RedisStore,  # TLS
    }
    for url, kind in cases.items():
        data = {"auth": {"mode": "none"}, "state": {"redis_url": url}, "cache": {}}
        for backend in ("redis", "tiered"):
            data["cache"] = {"backend": backend}
            store = build_store(parse_config(data, {}), Metrics())
            shared = store.redis if isinstance(store, TieredStore) else store
            assert type(shared) is kind, (url, backend)
            await shared.close()
