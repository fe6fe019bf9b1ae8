"""The score stores and keys on their own: memory LRU/TTL with a fake clock, Redis against
the real server (exact values, TTLs, digests only), outages and slowness as misses."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.observe.metrics import Metrics
from gateway.state.score_cache import ErrorReporter
from policies.cache import KeySpace, MemoryStore, RedisStore, TieredStore
from policies.cache.memory import ENTRY_BYTES
from tests.conftest import REDIS_URL
from tests.support.servers import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys_for(*docs: str, query: str = "q") -> list[bytes]:
    return KeySpace({"m": "m"}).document_keys("m", "", query, None, docs)


# --- keys ---------------------------------------------------------------------------


def test_keys_are_fixed_size_digests_per_document() -> None:
    space = KeySpace({"a": "a"})
    keys = space.document_keys("a", "", "query", None, ["doc one", "doc two", "doc one"])
    assert all(len(k) == 16 for k in keys)
    assert keys[0] == keys[2] != keys[1]
    # Independent of the other documents in the request.
    assert space.document_keys("a", "", "query", None, ["doc two"]) == [keys[1]]


def test_every_key_field_matters() -> None:
    space = KeySpace({"a": "a", "b": "b", "a-twin": "a"})
    base = space.document_keys("a", "", "query", None, ["doc"])
    variants = [
        space.document_keys("b", "", "query", None, ["doc"]),  # another family
        space.document_keys("a", "team-x", "query", None, ["doc"]),  # isolated team
        space.document_keys("a", "", "query", 512, ["doc"]),  # max_tokens_per_doc
        space.document_keys("a", "", "query!", None, ["doc"]),
        space.document_keys("a", "", "query", None, ["doc!"]),
    ]
    assert all(v != base for v in variants)
    assert len({v[0] for v in variants}) == len(variants)
    # Models of one family share entries.
    assert space.document_keys("a-twin", "", "query", None, ["doc"]) == base


def test_a_teams_own_copies_are_its_own_and_share_the_slot_of_their_entry() -> None:
    plain, tagged = KeySpace({"a": "a"}), KeySpace({"a": "a"}, slot_tag=True)
    keys = plain.document_keys("a", "", "query", None, ["doc one", "doc two"])
    mine, theirs = plain.seen_keys("team-x", keys), plain.seen_keys("team-y", keys)
    assert len({*keys, *mine, *theirs}) == 6 and all(len(k) == 16 for k in mine)
    assert mine == plain.seen_keys("team-x", keys)  # stable, so the next request finds them
    isolated = plain.document_keys("a", "team-x", "query", None, ["doc one", "doc two"])
    assert not set(mine) & set(isolated)
    keys = tagged.document_keys("a", "", "query", None, ["doc one", "doc two"])
    copies = tagged.seen_keys("team-x", keys)
    assert [c[:18] for c in copies] == [k[:18] for k in keys]  # `{tag}`: one slot, one MGET
    assert copies[0] != keys[0]


def test_field_boundaries_cannot_collide() -> None:
    space = KeySpace({"m": "m"})
    assert space.document_keys("m", "", "ab", None, ["c"]) != space.document_keys(
        "m", "", "a", None, ["bc"]
    )
    assert space.document_keys("m", "t", "q", None, ["d"]) != space.document_keys(
        "m", "", "tq", None, ["d"]
    )


def test_lone_surrogates_hash() -> None:
    assert len(keys_for("\ud800 broken", query="\udfff")[0]) == 16


# --- memory -------------------------------------------------------------------------


async def test_memory_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=3)
    k = keys_for("a", "b", "c", "d")
    await store.set_many(k[:3], [0.1, 0.2, 0.3], 60)
    assert await store.get_many([k[0]], 60) == [0.1]  # "a" is now most recent
    await store.set_many([k[3]], [0.4], 60)
    assert len(store) == 3
    assert await store.get_many(k, 60) == [0.1, None, 0.3, 0.4]


async def test_memory_a_key_stored_again_becomes_most_recent() -> None:
    store = MemoryStore(max_entries=3)
    k = keys_for("a", "b", "c", "d", "e")
    await store.set_many(k[:3], [0.1, 0.2, 0.3], 60)
    # "a" again, in a batch with a new key and a repeat: "a" becomes more recent than
    # "b" and "c", keeping the last score given for it, and the oldest ("b") goes.
    await store.set_many([k[0], k[3], k[0]], [0.5, 0.4, 0.6], 60)
    assert len(store) == 3
    await store.set_many([k[4]], [0.7], 60)  # "c" is now the least recent
    assert await store.get_many(k, 60) == [0.6, None, None, 0.4, 0.7]


async def test_memory_evicts_a_whole_batch_past_capacity() -> None:
    store = MemoryStore(max_entries=2)
    k = keys_for("a", "b", "c", "d", "e")
    await store.set_many(k, [0.1, 0.2, 0.3, 0.4, 0.5], 60)
    assert len(store) == 2
    assert await store.get_many(k, 60) == [None, None, None, 0.4, 0.5]


async def test_memory_a_large_store_evicts_its_oldest_sixty_fourth_at_once() -> None:
    store = MemoryStore(max_entries=128)  # evicts 128 // 64 = 2 more than it must
    k = keys_for(*(f"doc {i}" for i in range(130)))
    await store.set_many(k[:128], [float(i) for i in range(128)], 60)
    assert len(store) == 128  # full, not over: nothing evicted yet
    assert await store.get_many([k[0]], 60) == [0.0]  # doc 0 is now the most recent
    await store.set_many([k[128]], [128.0], 60)
    # One over: the oldest (docs 1, 2, 3) go; doc 0, touched, stays.
    assert len(store) == 126
    assert await store.get_many(k[:5], 60) == [0.0, None, None, None, 4.0]
    await store.set_many([k[129]], [129.0], 60)  # room again: nothing goes
    assert len(store) == 127


async def test_memory_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=10, clock=clock)
    k = keys_for("short", "long")
    await store.set_many([k[0]], [0.5], 10)
    await store.set_many([k[1]], [0.7], 100)
    clock.now += 9.99
    assert await store.get_many(k, 60) == [0.5, 0.7]
    clock.now += 0.01
    assert await store.get_many(k, 60) == [None, 0.7]
    assert len(store) == 1  # the expired entry was dropped when seen
    clock.now += 90
    assert await store.get_many(k, 60) == [None, None]


def test_memory_max_bytes_bounds_entries() -> None:
    assert MemoryStore(max_bytes=ENTRY_BYTES * 50).capacity == 50
    assert MemoryStore(max_entries=10, max_bytes=ENTRY_BYTES * 50).capacity == 10
    with pytest.raises(ValueError, match="max_entries or max_bytes"):
        MemoryStore()


# --- redis --------------------------------------------------------------------------


def redis_store(
    prefix: str,
    url: str = REDIS_URL,
    errors: list[BaseException] | None = None,
    clock: Callable[[], float] | None = None,
    timeout_s: float = 0.5,
    backoff_s: float = 5.0,
) -> RedisStore:
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    sink = errors if errors is not None else []
    return RedisStore(
        client,
        key_prefix=prefix,
        timeout_s=timeout_s,
        backoff_s=backoff_s,
        on_error=lambda backend, exc: sink.append(exc),
        **({"clock": clock} if clock else {}),
    )


async def test_redis_round_trip_is_exact_with_ttl_and_no_text(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    store = redis_store(cache_prefix)
    docs = [f"confidential document number {i}" for i in range(100)]
    keys = keys_for(*docs, query="secret query")
    scores = [i / 7 for i in range(100)]  # not representable in 4 bytes: must stay exact
    await store.set_many(keys, scores, 120)
    assert await store.get_many(keys, 120) == scores
    assert await store.get_many(keys_for("never stored"), 120) == [None]
    await store.close()

    stored = list(redis_client.scan_iter(match=cache_prefix + "*", count=1000))
    assert sorted(stored) == sorted(cache_prefix.encode() + k for k in keys)
    for key in stored:
        value = redis_client.get(key)
        assert value is not None and len(value) == 8
        assert 119_000 < redis_client.pttl(key) <= 120_000
        for text in (b"secret", b"confidential", b"query", b"document"):
            assert text not in key and text not in value


async def test_redis_ignores_values_of_another_layout(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    (key,) = keys_for("doc")
    redis_client.set(cache_prefix.encode() + key, b"0.5")
    store = redis_store(cache_prefix)
    assert await store.get_many([key], 60) == [None]
    redis_client.set(cache_prefix.encode() + key, struct.pack("<d", 0.25))
    assert await store.get_many([key], 60) == [0.25]
    await store.close()


async def test_unreachable_redis_is_a_miss_then_backs_off_then_retries() -> None:
    clock, errors = FakeClock(), []
    store = redis_store(
        "p:", url=f"redis://127.0.0.1:{free_port()}/0", errors=errors, clock=clock, backoff_s=5
    )
    keys = keys_for("a", "b")
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 1
    # Within the backoff window Redis is not tried at all (no latency, no new error).
    await store.set_many(keys, [0.1, 0.2], 60)
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 1
    clock.now += 5
    assert await store.get_many(keys, 60) == [None, None]
    assert len(errors) == 2  # tried again after the window
    await store.close()


async def test_slow_redis_is_a_miss_within_the_timeout() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # accepts the connection, never answers

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    errors: list[BaseException] = []
    store = redis_store("p:", url=f"redis://127.0.0.1:{port}/0", errors=errors, timeout_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.get_many(keys_for("a"), 60) == [None]
    assert loop.time() - started < 2.0  # bounded by the timeout, not hanging
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError | redis.RedisError)
    await store.close()
    server.close()
    await server.wait_closed()


# --- tiered -------------------------------------------------------------------------


async def test_tiered_reads_memory_first_and_fills_it_from_redis(
    cache_prefix: str, redis_client: redis.Redis
) -> None:
    shared = redis_store(cache_prefix)
    k = keys_for("a", "b", "c")
    await shared.set_many(k[:2], [0.1, 0.2], 60)
    tiered = TieredStore(MemoryStore(max_entries=10), shared)
    await tiered.memory.set_many([k[0]], [0.9], 60)  # memory wins where it knows
    assert await tiered.get_many(k, 60) == [0.9, 0.2, None]
    assert tiered.memory.get_now([k[1]]) == [0.2]  # filled from Redis
    await tiered.set_many([k[2]], [0.3], 60)
    assert redis_client.get(cache_prefix.encode() + k[2]) == struct.pack("<d", 0.3)
    await tiered.close()


async def test_tiered_memory_answers_while_redis_is_down() -> None:
    errors: list[BaseException] = []
    down = redis_store("p:", url=f"redis://127.0.0.1:{free_port()}/0", errors=errors)
    tiered = TieredStore(MemoryStore(max_entries=10), down)
    k = keys_for("a", "b")
    await tiered.set_many([k[0]], [0.4], 60)
    assert await tiered.get_many(k, 60) == [0.4, None]
    assert len(errors) == 1
    await tiered.close()


# --- error reporting ----------------------------------------------------------------


def test_store_errors_are_all_counted_but_logged_once_per_interval() -> None:
    clock, metrics = FakeClock(), Metrics()
    report = ErrorReporter(metrics, interval_s=30, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            report("redis", ConnectionError("Error 111 connecting to 127.0.0.1:1"))
        clock.now += 30
        report("redis", ConnectionError("again"))
    warnings = [e for e in logs if e["event"] == "cache_unavailable"]
    assert [w["failures"] for w in warnings] == [1, 5]
    assert warnings[0]["log_level"] == "warning" and warnings[0]["backend"] == "redis"
    value = metrics.registry.get_sample_value("rerank_cache_errors_total", {"backend": "redis"})
    assert value == 6


def test_throttled_warning_logs_once_per_interval_with_the_count() -> None:
    import structlog

    from gateway.observe.logs import ThrottledWarning

    now = [100.0]
    warn = ThrottledWarning("store_down", interval_s=30.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            warn(team="search")
        now[0] += 30.0
        warn(team="search")
    assert [(e["event"], e["failures"]) for e in logs] == [("store_down", 1), ("store_down", 5)]
