"""What bypassing the score cache costs requests for Rerank 5's relevant spans.

`python -m bench.spans_cache [--requests N] [--delay-ms D]` runs the gateway in process
in front of the fake Cohere (answering after D ms, as a real upstream would) and sends
the same 50-document request N times, with and without `relevant_spans`, then reports
per variant: upstream calls, tokens billed, and latency p50/p99. A plain repeat is a
cache hit; a span request goes upstream every time (docs/cache.md says why).

It also measures what the alternative would cost in memory: an in-process entry that
holds a score with three spans beside it, against one holding the score alone
(tracemalloc over 100,000 entries).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
import tracemalloc
from collections import OrderedDict
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import build_app
from gateway.config import parse_config
from gateway.http.auth import hash_key
from gateway.observe.logs import configure_logging
from providers.types import Span
from tests.fakes.cohere import FakeCohere, Faults

KEY = "bench-key"
DOCS = [f"Document {i}: Paris is the capital of France, notes {i}." for i in range(50)]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def run(requests: int, delay_ms: float) -> dict[str, dict[str, Any]]:
    fake = FakeCohere(faults=Faults(delay_s=delay_ms / 1000.0))
    upstream_runner, upstream = await serve(fake.app())
    config = {
        "auth": {"mode": "keys"},
        "teams": {"bench": {"key_sha256": [hash_key(KEY)]}},
        "providers": {"cohere": {"type": "cohere", "base_url": upstream, "api_key": fake.api_key}},
        "models": {
            "rerank-v5.0-pro": {"deployments": [{"provider": "cohere", "relevant_spans": True}]}
        },
    }
    gateway_runner, gateway = await serve(build_app(parse_config(config, {})))
    results: dict[str, dict[str, Any]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for name, extra in (("plain", {}), ("spans", {"relevant_spans": {"mode": "enabled"}})):
                calls = len(fake.calls)
                body = {"model": "rerank-v5.0-pro", "query": "capital of France", "documents": DOCS}
                latencies, tokens = [], 0
                for _ in range(requests):
                    started = time.perf_counter()
                    async with session.post(
                        gateway + "/v2/rerank",
                        json={**body, **extra},
                        headers={"Authorization": f"Bearer {KEY}"},
                    ) as resp:
                        answer = await resp.json()
                    latencies.append((time.perf_counter() - started) * 1000.0)
                    tokens += answer["meta"]["billed_units"].get("input_tokens", 0)
                latencies.sort()
                results[name] = {
                    "upstream_calls": len(fake.calls) - calls,
                    "input_tokens_billed": tokens,
                    "p50_ms": round(statistics.median(latencies), 2),
                    "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
                }
    finally:
        await gateway_runner.cleanup()
        await upstream_runner.cleanup()
    return results


def entry_bytes(with_spans: bool, entries: int = 100_000) -> float:
    """Bytes per in-process entry: digest key, (score, expiry) or (score, spans, expiry)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store: OrderedDict[bytes, tuple[Any, ...]] = OrderedDict()
    for i in range(entries):
        key = i.to_bytes(16, "big")
        score = 0.5 + i / (10 * entries)
        if with_spans:
            spans = tuple(Span(i % 40, i % 40 + 7 + j, score / (j + 1)) for j in range(3))
            store[key] = (score, spans, 1e9 + i)
        else:
            store[key] = (score, 1e9 + i)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    args = parser.parse_args()
    configure_logging("warning")  # no access log line per request
    results = asyncio.run(run(args.requests, args.delay_ms))
    print(
        f"{args.requests} identical 50-document requests, upstream answering in "
        f"{args.delay_ms:g} ms:"
    )
    for name, figures in results.items():
        print(f"  {name:6} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    print(
        f"memory per cached document: score only {entry_bytes(False):.0f} B, "
        f"score + 3 spans {entry_bytes(True):.0f} B"
    )


if __name__ == "__main__":
    main()
