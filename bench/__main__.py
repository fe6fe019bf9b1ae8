"""`make bench`: direct-to-upstream vs through-gateway, printed as a table and saved as JSON.

Starts the fast fake upstream and gateways (`rerank-gateway serve`) as separate processes
on loopback, then drives each with the Python load generator. Scenarios:

- `direct`, `gateway`: the upstream alone and through a gateway with the cache off
  (what the gateway itself adds to every request);
- `hit-memory`, `hit-redis`: the same bodies repeated, so after warm-up every request is
  a full cache hit (in-process memory; Redis at 127.0.0.1:6379, skipped if none answers);
- `partial`: every request shares 40 cached documents and sends 10 new ones upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import orjson
import redis
import uvloop

from bench import wrk
from bench.loadgen import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-team-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def make_bodies(count: int, docs: int = 50, doc_chars: int = 800, seed: int = 7) -> list[bytes]:
    """Distinct 50-document requests of about 40 KB each."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(2000)]

    def text(n: int) -> str:
        out: list[str] = []
        while sum(len(w) + 1 for w in out) < n:
            out.append(rng.choice(words))
        return " ".join(out)

    return [
        orjson.dumps(
            {
                "model": "rerank-v3.5",
                "query": text(60),
                "documents": [text(doc_chars) for _ in range(docs)],
            }
        )
        for _ in range(count)
    ]


class PartialBodies(Sequence[bytes]):
    """A virtual list of bodies: body i has the same 40 documents as every other (cached
    after warm-up) and 10 documents of its own (sent upstream)."""

    def __init__(self, shared: int = 40, fresh: int = 10, doc_chars: int = 800) -> None:
        first = orjson.loads(make_bodies(1, docs=shared + fresh, doc_chars=doc_chars)[0])
        self.query = first["query"]
        self.shared = first["documents"][:shared]
        self.fresh = first["documents"][shared:]
        self.salt = uuid.uuid4().hex[:8]  # a new instance never repeats an earlier one's

    def __len__(self) -> int:
        return 2**31

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            raise TypeError("PartialBodies is not sliceable")
        docs = self.shared + [f"{self.salt}-{i}-{j} {d}" for j, d in enumerate(self.fresh)]
        return orjson.dumps({"model": "rerank-v3.5", "query": self.query, "documents": docs})


def redis_available(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def gateway_config(upstream_port: int, workers: int = 1, extra: str = "") -> str:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return f"""
server: {{host: 127.0.0.1, workers: {workers}}}
auth: {{mode: keys}}
teams: {{bench: {{key_sha256: ["{digest}"]}}}}
providers:
  upstream: {{type: cohere, base_url: "http://127.0.0.1:{upstream_port}", api_key: upstream-key}}
models:
  rerank-v3.5: {{deployments: [{{provider: upstream}}]}}
logging: {{level: warning}}
{extra}
"""


def start(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load(
    tool: str,
    url: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> LoadResult:
    if tool == "wrk":
        return wrk.run_wrk(url, list(bodies), headers, concurrency, seconds)
    uvloop.install()
    return asyncio.run(run_load(url, bodies, headers, concurrency, seconds))


def row(name: str, concurrency: int, result: LoadResult) -> dict[str, float | int | str]:
    return {
        "scenario": name,
        "concurrency": concurrency,
        "requests": result.requests,
        "errors": result.errors,
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50, 3),
        "p99_ms": round(result.p99, 3),
    }


REDIS_URL = "redis://127.0.0.1:6379/0"


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per scenario")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument(
        "--tool", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    args = parser.parse_args()
    if args.tool == "auto":
        args.tool = "wrk" if wrk.available() else "python"
    print(f"load generator: {args.tool} (the partial scenario always uses the Python one)")

    bodies = make_bodies(64)
    up_port = free_port()
    prefix = f"rg-bench:{uuid.uuid4().hex}:"
    gateways = {  # name -> (workers, extra config); each runs as its own process
        "gateway": (1, "cache: {backend: none}"),
        "gateway-2w": (2, "cache: {backend: none}"),
        "hit-memory": (1, "cache: {backend: memory}"),
    }
    if redis_available(REDIS_URL):
        gateways["hit-redis"] = (
            1,
            f'cache: {{backend: redis, key_prefix: "{prefix}"}}\n'
            f'state: {{redis_url: "{REDIS_URL}"}}',
        )
    else:
        print(f"no Redis at {REDIS_URL}: leaving out the hit-redis scenario")
    ports = {name: free_port() for name in gateways}
    procs = [start([sys.executable, "-m", "bench.upstream", str(up_port)])]
    configs = []
    for name, (workers, extra) in gateways.items():
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(gateway_config(up_port, workers, extra))
        configs.append(f.name)
        listen = str(ports[name])
        procs.append(
            start([sys.executable, "-m", "gateway", "serve", "--config", f.name, "--port", listen])
        )
    rows = []
    try:
        wait_port(up_port)
        for port in ports.values():
            wait_port(port)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        urls = {"direct": f"http://127.0.0.1:{up_port}/v2/rerank"}
        urls.update({name: f"http://127.0.0.1:{port}/v2/rerank" for name, port in ports.items()})
        for concurrency in (1, 32):
            for name, url in urls.items():
                result = load(args.tool, url, bodies, headers, concurrency, args.seconds)
                rows.append(row(name, concurrency, result))
            # Every partial body is new, so it needs the Python generator's virtual list.
            partial = load(
                "python", urls["hit-memory"], PartialBodies(), headers, concurrency, args.seconds
            )
            rows.append(row("partial", concurrency, partial))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        for path in configs:
            os.unlink(path)
        if "hit-redis" in gateways:
            with redis.Redis.from_url(REDIS_URL) as client:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
    report(rows, args.out, args.tool)
    return 0


def report(rows: list[dict], out: str, tool: str) -> None:
    head = ("scenario", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms")
    print("{:<12} {:>4} {:>9} {:>6} {:>9} {:>8} {:>8}".format(*head))
    for r in rows:
        print(
            f"{r['scenario']:<12} {r['concurrency']:>4} {r['requests']:>9} {r['errors']:>6} "
            f"{r['rps']:>9.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
        )
    by = {(r["scenario"], r["concurrency"]): r for r in rows}
    direct_rps = by["direct", 32]["rps"]
    summary = {
        "added_p50_ms_c1": round(by["gateway", 1]["p50_ms"] - by["direct", 1]["p50_ms"], 3),
        "throughput_ratio_c32": round(by["gateway", 32]["rps"] / direct_rps, 3),
        "throughput_ratio_c32_2_workers": round(by["gateway-2w", 32]["rps"] / direct_rps, 3),
    }
    for name in ("hit-memory", "hit-redis", "partial"):
        if (name, 1) in by:
            summary[f"{name}_p50_ms_c1"] = by[name, 1]["p50_ms"]
            summary[f"{name}_vs_direct_throughput_c32"] = round(by[name, 32]["rps"] / direct_rps, 3)
    print(
        f"added p50 at concurrency 1: {summary['added_p50_ms_c1']} ms; "
        f"gateway/direct throughput at concurrency 32: {summary['throughput_ratio_c32']} "
        f"(2 workers: {summary['throughput_ratio_c32_2_workers']})"
    )
    Path(out).write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_generator": tool,
                "request": {"documents": 50, "bytes": 40_000},
                "rows": rows,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
