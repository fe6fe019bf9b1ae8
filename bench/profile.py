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
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import uvloop

from bench.__main__ import (
    CACHES,
    KEY,
    ROOT,
    MissBodies,
    PartialBodies,
    free_port,
    gateway_config,
    make_bodies,
    start,
    wait_port,
)
from bench.loadgen import run_load


def _child(config: str, port: int, out: str) -> None:
    """Run in the profiled process: serve until SIGTERM, then write the profile."""
    from gateway.cli.server import run_worker

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_worker(config, "127.0.0.1", port, False)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def show_samples(raw: str, top: int) -> None:
    """py-spy's collapsed stacks as shares of the samples: by leaf function, and by the
    outermost frame of the project's own code (each stack counted once)."""
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[_frame(frames[-1], root)] += n
        own = [f for f in frames if _ours(f, root)]
        if own:
            ours[_frame(own[-1], root)] += n
    print(f"{total} samples; by leaf frame (share of all samples):")
    for name, n in leaves.most_common(top):
        print(f"{100 * n / total:6.1f}%  {name}")
    print("by the innermost frame of the project's own code:")
    for name, n in ours.most_common(top):
        print(f"{100 * n / total:6.1f}%  {name}")


def _ours(frame: str, root: str) -> bool:
    """A frame of the project's code (paths are relative when run from the checkout)."""
    path = frame.partition(" (")[2].replace(root, "")
    return path.startswith(("gateway/", "policies/", "providers/"))


def _frame(frame: str, root: str) -> str:
    """`func (path:line)` without the line and the checkout's path."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].replace(root, "").split("site-packages/")[-1]
    return f"{name} ({path})"


def show(stats: pstats.Stats, top: int, sort: str) -> None:
    """Own and inclusive µs per request (requests: calls of the pipeline's handler)."""
    table = stats.stats  # type: ignore[attr-defined]
    requests = (
        sum(  # a plain method, called once per request (a coroutine's resumes count)
            calls[1]
            for (path, _, name), calls in table.items()
            if name == "_record" and path.endswith("gateway/http/pipeline.py")
        )
        or 1
    )
    total = sum(calls[2] for calls in table.values())
    print(f"{requests} requests, {total * 1e6 / requests:.0f} µs profiled per request")
    print(f"{'own µs':>8} {'incl µs':>8} {'calls':>6}  function")
    index = 2 if sort == "tottime" else 3
    ordered = sorted(table.items(), key=lambda item: item[1][index], reverse=True)
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for (path, line, name), (_, calls, own, incl, _) in ordered[:top]:
        where = path.replace(root, "").split("site-packages/")[-1]
        print(
            f"{own * 1e6 / requests:8.1f} {incl * 1e6 / requests:8.1f} "
            f"{calls / requests:6.2f}  {where}:{line}({name})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.profile")
    parser.add_argument("--scenario", choices=sorted(CACHES), default="gateway")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--keep", help="write the raw profile here (pstats format)")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="sample with this py-spy binary instead of cProfile (no slow-down of Python calls)",
    )
    parser.add_argument("--checkout", help="with --py-spy: the gateway of this source tree")
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
    if args.py_spy:
        serve = [sys.executable, "-m", "gateway", "serve", "--config", f.name]
        gateway = subprocess.Popen(
            [*serve, "--port", str(gw_port)],
            cwd=args.checkout or ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    else:
        gateway = start(
            [sys.executable, "-m", "bench.profile", "--child", f.name, str(gw_port), out]
        )
    spy = None
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
        if args.py_spy:  # from the end of the generator's warm-up second to its end
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(gateway.pid), "--rate", "250",
                 "--duration", str(int(args.seconds)), "--format", "raw", "--nonblocking",
                 "--output", out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        result = asyncio.run(run_load(url, bodies, headers, 32, args.seconds + 1.0))
        print(f"{args.scenario}: {result.requests} requests, {result.errors} errors")
        if spy is not None:
            spy.wait(60)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        upstream.terminate()
        upstream.wait(10)
        os.unlink(f.name)
    if args.py_spy:
        show_samples(Path(out).read_text(), args.top)
        os.unlink(out)
        return 0
    deadline = time.monotonic() + 10
    while not Path(out).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    show(pstats.Stats(out), args.top, args.sort)
    if args.keep:
        os.replace(out, args.keep)
    else:
        os.unlink(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
