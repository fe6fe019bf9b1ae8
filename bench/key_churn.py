"""`python -m bench.key_churn`: what API key churn costs the replicas that only watch it.

Two gateway processes (replicas A and B, one worker each) share the Redis at
127.0.0.1:6379 under a scratch prefix of their own (deleted afterwards). Two
measurements, made as issue 21 made them:

1. Idle CPU: the store is seeded with `--base` keys (1,500, over ten teams), then as many
   again are created one by one through A's admin API while B serves nothing. The figure
   is B's CPU time (utime + stime, from /proc) from the first creation until B honours
   the last key.
2. Rerank p99 of B under a steady closed-loop load (`local-bm25`, concurrency 4): first a
   quiet window, then while one manager key creates `--flood` (600) keys through A as fast
   as it can (8 at a time). Refused creations (429, 409) are counted.

`--source DIR` runs the gateways from another checkout (main, for the figures before a
change); `--raise-limits` lifts the per-team cap and the creation rate (settings older
versions do not know), so that the flood is created whole and only the cost of watching it
is measured. Prints one JSON document. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis
import yaml

from bench.procstat import cpu_seconds, load_average
from gateway.http.auth import hash_key
from policies.access.api_keys import KeyRecord, digest_of, new_api_key
from policies.access.redis_keys import RedisKeyStore
from tests.support.processes import ROOT, gateway_processes

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN, TEAM, MANAGER = "bench-admin-key", "bench-team-key", "bench-manager-key"
TEAMS = 10
BODY = {"model": "local-bm25", "query": "orbit", "documents": ["rockets reach orbit", "pie"] * 3}
CONVERGE_S = 60.0  # the longest wait for B to honour the last key


def config(prefix: str, raise_limits: bool) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "mode": "keys",
        "admin_key_sha256": hash_key(ADMIN),
        "api_keys_prefix": prefix,
    }
    if raise_limits:
        auth.update(api_keys_per_team=1_000_000, api_key_creations_per_minute=100_000)
    return {
        "auth": auth,
        "teams": {
            "search": {"key_sha256": [hash_key(TEAM)], "manager_key_sha256": [hash_key(MANAGER)]}
        },
        "providers": {"offline": {"type": "local"}},
        "models": {"local-bm25": {"deployments": [{"provider": "offline"}]}},
        "state": {"redis_url": REDIS_URL},
        "limits": {"redis_prefix": prefix},
        "cache": {"backend": "none"},
    }


async def seed(prefix: str, count: int) -> None:
    """`count` records written straight to the store, before any gateway starts."""
    client = aioredis.from_url(REDIS_URL)
    store = RedisKeyStore(client, prefix)
    for i in range(count):
        key_id, key = new_api_key()
        await store.save(KeyRecord(key_id, f"t{i % TEAMS}", digest_of(key), time.time()))
    await client.aclose()


async def post(
    session: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def until_honoured(session: aiohttp.ClientSession, url: str, key: str) -> float:
    """Seconds until `url` answers a rerank with `key` (polled every 10 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < CONVERGE_S:
        if (await post(session, url + "/v2/rerank", key, BODY))[0] == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{url} did not honour the last key within {CONVERGE_S} s")


async def idle_cpu(a: str, b: str, b_pid: int, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        before, started = cpu_seconds(b_pid), time.monotonic()
        last = None
        for i in range(count):
            body = {"team": f"t{i % TEAMS}"}
            status, issued = await post(session, a + "/admin/keys", ADMIN, body)
            assert status == 201, issued
            last = issued["key"]
        assert last is not None
        await until_honoured(session, b, last)
        return {
            "created": count,
            "b_cpu_s": round(cpu_seconds(b_pid) - before, 2),
            "wall_s": round(time.monotonic() - started, 1),
        }


async def load(url: str, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            status, _ = await post(session, url + "/v2/rerank", TEAM, BODY)
            assert status == 200
            samples.append((started, (time.monotonic() - started) * 1000))


async def flood(a: str, count: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    todo = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def creator() -> None:
            for _ in todo:
                status, _ = await post(session, a + "/admin/keys", MANAGER, {"name": "flood"})
                outcomes[str(status)] = outcomes.get(str(status), 0) + 1

        await asyncio.gather(*(creator() for _ in range(8)))
    return outcomes


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
    }


async def p99_under_flood(
    a: str, b: str, pids: list[int], count: int, quiet_s: float
) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    loaders = [asyncio.create_task(load(b, stop, samples)) for _ in range(4)]
    await asyncio.sleep(1.0)  # warm
    quiet_cpu, quiet_start = cpu_seconds(pids[1]), time.monotonic()
    await asyncio.sleep(quiet_s)
    cpu_before = [cpu_seconds(pid) for pid in pids]
    flood_start = time.monotonic()
    b_quiet_cpu = cpu_before[1] - quiet_cpu
    outcomes = await flood(a, count)
    async with aiohttp.ClientSession() as session:  # until B has caught up with the flood
        _, probe = await post(session, a + "/admin/keys", ADMIN, {"team": "probe"})
        await until_honoured(session, b, probe["key"])
    flood_end = time.monotonic()
    cpu = [round(cpu_seconds(pid) - was, 2) for pid, was in zip(pids, cpu_before, strict=True)]
    stop.set()
    await asyncio.gather(*loaders)
    quiet = [ms for at, ms in samples if at < flood_start]
    during = [ms for at, ms in samples if flood_start <= at <= flood_end]
    measured_quiet = sum(1 for at, _ in samples if quiet_start <= at < flood_start)
    return {
        "creations": outcomes,
        "flood_s": round(flood_end - flood_start, 2),
        "cpu_s_during_flood": {"a": cpu[0], "b": cpu[1]},
        # B serves the load throughout: its CPU per request served, quiet and during the
        # flood (the difference is what watching the flood cost it, spread over requests).
        "b_cpu_ms_per_request": {
            "quiet": round(1000 * b_quiet_cpu / max(1, measured_quiet), 3),
            "during_flood": round(1000 * cpu[1] / max(1, len(during)), 3),
        },
        "quiet": percentiles(quiet),
        "during_flood": percentiles(during),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"rg-bench-churn-{uuid.uuid4().hex[:12]}:"
    load_before = [round(x, 2) for x in load_average()]
    sync = redis.Redis.from_url(REDIS_URL)
    try:
        asyncio.run(seed(prefix, args.base))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gateway.yaml"
            path.write_text(yaml.safe_dump(config(prefix, args.raise_limits)))
            with gateway_processes(path, Path(tmp), 2, source=args.source) as (procs, urls):
                a, b = urls
                time.sleep(2)  # let both settle after start
                churn = asyncio.run(idle_cpu(a, b, procs[1].pid, args.base))
                pids = [proc.pid for proc in procs]
                latency = asyncio.run(p99_under_flood(a, b, pids, args.flood, args.quiet_s))
    finally:
        names = list(sync.scan_iter(match=prefix + "*", count=1000))
        if names:
            sync.delete(*names)
        sync.close()
    return {
        "source": str(args.source),
        "raise_limits": args.raise_limits,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in load_average()]},
        "idle_replica": {"keys_from": args.base, "keys_to": 2 * args.base, **churn},
        "rerank_on_b": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument("--base", type=int, default=1_500, help="keys before the churn")
    parser.add_argument("--flood", type=int, default=600, help="keys one manager creates")
    parser.add_argument("--quiet-s", type=float, default=8.0, help="load before the flood")
    parser.add_argument("--raise-limits", action="store_true")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
