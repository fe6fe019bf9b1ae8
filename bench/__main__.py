"""`make bench`: direct-to-upstream vs through-gateway, printed as a table and saved as JSON.

Starts the fast fake upstream and the gateway (`rerank-gateway serve`) as separate
processes on loopback, then drives each with the Python load generator.
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
from pathlib import Path

import orjson
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
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> LoadResult:
    if tool == "wrk":
        return wrk.run_wrk(url, bodies, headers, concurrency, seconds)
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
    print(f"load generator: {args.tool}")

    bodies = make_bodies(64)
    up_port = free_port()
    procs = [start([sys.executable, "-m", "bench.upstream", str(up_port)])]
    targets = {"direct": f"http://127.0.0.1:{up_port}/v2/rerank"}
    configs = []
    rows = []
    try:
        for name, workers in (("gateway", 1), ("gateway-2w", 2)):
            port = free_port()
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write(gateway_config(up_port, workers))
            configs.append(f.name)
            cmd = [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                f.name,
                "--port",
                str(port),
            ]
            procs.append(start(cmd))
            targets[name] = f"http://127.0.0.1:{port}/v2/rerank"
        for url in targets.values():
            wait_port(int(url.split(":")[2].split("/")[0]))
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        for concurrency in (1, 32):
            for name, url in targets.items():
                result = load(args.tool, url, bodies, headers, concurrency, args.seconds)
                rows.append(row(name, concurrency, result))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        for path in configs:
            os.unlink(path)
    report(rows, args.out, args.tool)
    return 0


def report(rows: list[dict], out: str, tool: str) -> None:
    head = ("scenario", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms")
    print("{:<10} {:>4} {:>9} {:>6} {:>9} {:>8} {:>8}".format(*head))
    for r in rows:
        print(
            f"{r['scenario']:<10} {r['concurrency']:>4} {r['requests']:>9} {r['errors']:>6} "
            f"{r['rps']:>9.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
        )
    by = {(r["scenario"], r["concurrency"]): r for r in rows}
    summary = {
        "added_p50_ms_c1": round(by["gateway", 1]["p50_ms"] - by["direct", 1]["p50_ms"], 3),
        "throughput_ratio_c32": round(by["gateway", 32]["rps"] / by["direct", 32]["rps"], 3),
        "throughput_ratio_c32_2_workers": round(
            by["gateway-2w", 32]["rps"] / by["direct", 32]["rps"], 3
        ),
    }
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
