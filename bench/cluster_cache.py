"""Score lookups on a three-master Redis Cluster: two key layouts, one request's 100 keys.

`python -m bench.cluster_cache [--requests N]` starts a private cluster on loopback and
times `RedisStore.get_many` for a partial hit (half the keys cached) with:

- `spread`: the gateway's layout, each (query, document) digest hashed on its own, so a
  request's keys fall in ~100 slots on all 3 masters; the store groups them per slot and
  pipelines the MGETs (one round trip per node, sent in parallel);
- `by-query`: keys tagged `{model+query digest}` so every key of a request shares one slot:
  one MGET to one node;
- `per-slot`: redis-py's own `mget_nonatomic` (one MGET per slot, each its own command),
  for reference.

Prints p50/p99 in ms and how many nodes and commands one lookup touches.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time

from redis.asyncio.cluster import RedisCluster

from policies.cache.redis_store import RedisStore
from tests.support.redis_topologies import OwnCluster


def keys_for(layout: str, request: int, docs: int = 100) -> list[bytes]:
    query = hashlib.sha256(b"query-%d" % request).digest()[:8]
    digests = [hashlib.sha256(query + b"doc-%d" % i).digest()[:16] for i in range(docs)]
    if layout == "by-query":
        tag = b"{" + query.hex().encode() + b"}"
        return [tag + d for d in digests]
    return digests


async def measure(client: RedisCluster, layout: str, requests: int) -> dict[str, float]:
    store = RedisStore(client, key_prefix="b:", timeout_s=5, backoff_s=0, on_error=print)
    times = []
    for r in range(requests):
        keys = keys_for(layout, r)
        await store.set_many(keys[::2], [0.5] * 50, 60)
        started = time.perf_counter()
        if layout == "per-slot":
            await client.mget_nonatomic([b"b:" + k for k in keys])
        else:
            found = await store.get_many(keys, 60)
            assert sum(f is not None for f in found) == 50
        times.append((time.perf_counter() - started) * 1000)
    keys = [b"b:" + k for k in keys_for(layout, 0)]
    slots = {client.keyslot(k) for k in keys}
    nodes = {client.nodes_manager.get_node_from_slot(s).name for s in slots}  # type: ignore[union-attr]
    commands = 1 if layout == "by-query" else len(slots)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(len(times) * 0.99) - 1],
        "nodes": len(nodes),
        "commands": commands,
    }


async def main(requests: int) -> None:
    cluster = OwnCluster()
    cluster.start()
    try:
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        await client.initialize()
        for layout in ("spread", "by-query", "per-slot"):
            await measure(client, layout, 20)  # warm-up
            result = await measure(client, layout, requests)
            print(
                f"{layout:9} p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                f"nodes {result['nodes']}  commands {result['commands']}"
            )
        await client.aclose()
    finally:
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    asyncio.run(main(parser.parse_args().requests))
