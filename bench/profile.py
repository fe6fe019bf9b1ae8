"""Where one gateway process spends its time, per scenario: `python -m bench.profile`.

Starts the fast fake upstream and one gateway process run under cProfile, drives it
with the closed-loop generator (concurrency 32) for a few seconds, stops it (SIGTERM:
the profile is written as it exits) and prints the functions with the most own time.
cProfile slows call-heavy Python several times over, so read the shares, not the
absolute figures; it needs nothing installed (py-spy is not on every machine).

    python -m bench.profile --scenario hit-redis --seconds 4 --top 30
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from bench.__main__ import (
    KEY,
    REDIS_URL,
    MissBodies,
    PartialBodies,
    free_port,
    gateway_config,
    make_bodies,
    start,
    wait_port,
)
from bench.loadgen import run_load

CACHES = {
    "gateway": "cache: {backend: none}",
    "hit-memory": "cache: {backend: memory}",
    "miss-memory": "cache: {backend: memory}",
    "partial": "cache: {backend: memory}",
    "hit-redis": 'cache: {backend: redis, key_prefix: "PREFIX"}\n'
    f'state: {{redis_url: "{REDIS_URL}"}}',
}


def _child(config: str, port: int, out: str) -> None:
    """Run in the profiled process: serve until SIGTERM, then write the profile."""
    from gateway.server import run_worker

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_worker(config, "127.0.0.1", port, False)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.profile")
    parser.add_argument("--scenario", choices=sorted(CACHES), default="gateway")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    up_port, gw_port = free_port(), free_port()
    prefix = f"rg-bench:{uuid.uuid4().hex}:"
    extra = CACHES[args.scenario].replace("PREFIX", prefix)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(gateway_config(up_port, 1, extra))
    out = tempfile.mktemp(suffix=".prof")
    upstream = start([sys.executable, "-m", "bench.upstream", str(up_port)])
    gateway = start([sys.executable, "-m", "bench.profile", "--child", f.name, str(gw_port), out])
    try:
        wait_port(up_port, upstream)
        wait_port(gw_port, gateway)
        bodies = {
            "miss-memory": MissBodies(),
            "partial": PartialBodies(),
        }.get(args.scenario) or make_bodies(64)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        uvloop.install()
        url = f"http://127.0.0.1:{gw_port}/v2/rerank"
        result = asyncio.run(run_load(url, bodies, headers, 32, args.seconds))
        print(f"{args.scenario}: {result.requests} requests, {result.errors} errors")
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        upstream.terminate()
        upstream.wait(10)
        os.unlink(f.name)
    deadline = time.monotonic() + 10
    while not Path(out).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = pstats.Stats(out)
    stats.sort_stats(args.sort).print_stats(args.top)
    os.unlink(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
