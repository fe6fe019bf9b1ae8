"""`make bench`: direct-to-upstream vs through-gateway, printed as a table and saved as JSON.

Starts the fast fake upstream and gateways (`rerank-gateway serve`) as separate processes
on loopback, then drives each with the Python load generator. Scenarios:

- `direct`, `gateway`: the upstream alone and through a gateway with the cache off
  (what the gateway itself adds to every request);
- `floor`: a proxy that only forwards (aiohttp's server, the gateway's upstream client):
  what any gateway on this stack costs before its own logic (`bench/floor.py`);
- `floor-json`: the same proxy decoding the caller's JSON and writing the upstream's body
  and Cohere's answer anew: what any gateway that speaks the API itself costs at least;
- `hit-memory`, `hit-redis`: the same bodies repeated, so after warm-up every request is
  a full cache hit (in-process memory; Redis at 127.0.0.1:6379, skipped if none answers);
- `partial`: every request shares 40 cached documents and sends 10 new ones upstream;
- `miss-memory`: the memory cache on and every request new (the usual miss path);
- open loop (`--scenarios openloop`): a constant rate (500 and 1,000 req/s) against an
  upstream that answers in 150 ms, direct and through a gateway side by side, latency
  measured from the intended send time (no coordinated omission);
- burst: 1,024 clients connecting at once (does the listen backlog take them all?).

Every row has the CPU the measured server process (with its workers) spent per request,
from /proc: on a shared machine it moves much less than requests per second do.
- soak (`--scenarios soak`, opt-in): a million partial-hit requests (`--soak-requests`)
  with the gateway's RSS read every tenth of the run: does memory settle?
- depth (`--scenarios depth`, opt-in, in process): what depth advice adds to a request
  (`bench/depth.py`).

`--quick` shortens every run; `--scenarios` picks groups (closed, openloop, burst, soak).
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
from typing import Any, overload

import orjson
import redis
import uvloop

from bench import procstat, wrk
from bench.depth import print_depth, run_depth
from bench.ledger import DEFAULT_DSN as LEDGER_DSN
from bench.ledger import print_ledger, run_ledger
from bench.loadgen import LoadResult, run_load
from bench.openloop import OpenLoopResult, burst, run_open_loop
from bench.soak import run_soak

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-team-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the process for port {port} exited: {err[-2000:]}")
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


class VirtualBodies(Sequence[bytes]):
    """An endless list of request bodies, each made when asked for (`body(i)`)."""

    def body(self, i: int) -> bytes:
        raise NotImplementedError

    def __len__(self) -> int:
        return 2**31

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            raise TypeError(f"{type(self).__name__} is not sliceable")
        return self.body(i)


_MARK = "\u0001mark\u0001"  # where a body's own text goes (never in generated text)


class TemplateBodies(VirtualBodies):
    """Bodies made from one JSON template: body i is the template with a mark of its own,
    `<salt>-<i>-<k>`, written at each place k. The Python generator makes them with
    `body(i)`, wrk's Lua script from `pieces` (bench/wrk.py), so both send the same."""

    def __init__(self, template: dict) -> None:
        self.salt = uuid.uuid4().hex[:8]  # a new instance never repeats an earlier one's
        self.pieces = orjson.dumps(template).split(orjson.dumps(_MARK)[1:-1])

    def body(self, i: int) -> bytes:
        out = [self.pieces[0]]
        for k, piece in enumerate(self.pieces[1:], 1):
            out.append(b"%s-%d-%d" % (self.salt.encode(), i, k))
            out.append(piece)
        return b"".join(out)


class MissBodies(TemplateBodies):
    """All new: the query starts with the body's mark, so no document key repeats (50
    documents scored upstream every time)."""

    def __init__(self) -> None:
        first = orjson.loads(make_bodies(1)[0])
        self.query, self.documents = first["query"], first["documents"]
        super().__init__(
            {"model": "rerank-v3.5", "query": f"{_MARK} {self.query}", "documents": self.documents}
        )


class PartialBodies(TemplateBodies):
    """The same 40 documents as every other body (cached after warm-up) and 10 documents
    of its own (sent upstream)."""

    def __init__(self, shared: int = 40, fresh: int = 10, doc_chars: int = 800) -> None:
        first = orjson.loads(make_bodies(1, docs=shared + fresh, doc_chars=doc_chars)[0])
        self.query = first["query"]
        self.shared = first["documents"][:shared]
        self.fresh = first["documents"][shared:]
        docs = self.shared + [f"{_MARK} {d}" for d in self.fresh]
        super().__init__({"model": "rerank-v3.5", "query": self.query, "documents": docs})


def redis_available(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def gateway_config(
    upstream_port: int, workers: int = 1, extra: str = "", server: str = "", provider: str = ""
) -> str:
    """`server` and `provider`: more keys of those mappings, as `, key: value` text."""
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    base_url = f"http://127.0.0.1:{upstream_port}"
    return f"""
server: {{host: 127.0.0.1, workers: {workers}{server}}}
auth: {{mode: keys}}
teams: {{bench: {{key_sha256: ["{digest}"]}}}}
providers:
  upstream: {{type: cohere, base_url: "{base_url}", api_key: upstream-key{provider}}}
models:
  rerank-v3.5: {{deployments: [{{provider: upstream}}]}}
logging: {{level: warning}}
{extra}
"""


def start(cmd: list[str], cwd: str | Path = ROOT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load(
    tool: str,
    url: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    pid: int,
) -> LoadResult:
    if tool == "wrk":
        before = procstat.cpu_seconds(pid)
        if isinstance(bodies, TemplateBodies):  # every body new, made by wrk's script
            template = (bodies.pieces, bodies.salt)
            result = wrk.run_wrk(url, [], headers, concurrency, seconds, template)
        else:
            result = wrk.run_wrk(url, list(bodies), headers, concurrency, seconds)
        result.cpu_s = procstat.cpu_seconds(pid) - before
        return result
    uvloop.install()
    probe = lambda: procstat.cpu_seconds(pid)  # noqa: E731
    return asyncio.run(run_load(url, bodies, headers, concurrency, seconds, cpu_probe=probe))


def cpu_us(cpu_s: float | None, requests: int) -> float | None:
    return round(cpu_s * 1e6 / requests, 1) if cpu_s is not None and requests else None


def row(name: str, concurrency: int, result: LoadResult) -> dict[str, float | int | str | None]:
    return {
        "scenario": name,
        "concurrency": concurrency,
        "requests": result.requests,
        "errors": result.errors,
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50, 3),
        "p99_ms": round(result.p99, 3),
        "cpu_us_per_req": cpu_us(result.cpu_s, result.requests),
    }


REDIS_URL = "redis://127.0.0.1:6379/0"

# The cache section of each single-process row that bench.instructions and bench.profile
# run (PREFIX: a fresh Redis key prefix per run).
CACHES = {
    "gateway": "cache: {backend: none}",
    "hit-memory": "cache: {backend: memory}",
    "miss-memory": "cache: {backend: memory}",
    "partial": "cache: {backend: memory}",
    "hit-redis": 'cache: {backend: redis, key_prefix: "PREFIX"}\n'
    f'state: {{redis_url: "{REDIS_URL}"}}',
}
GROUPS = ("closed", "openloop", "burst")  # what `make bench` runs
OPT_IN = ("soak", "ledger", "depth")  # long, or in process: only when asked for
DELAY_MS = 150.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per scenario")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument(
        "--tool", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--quick", action="store_true", help="2 s runs, c=32 and 500 req/s only")
    parser.add_argument(
        "--scenarios",
        default=",".join(GROUPS),
        help=f"comma-separated groups of {GROUPS + OPT_IN}",
    )
    parser.add_argument(
        "--soak-requests", type=int, default=1_000_000, help="requests of the soak run"
    )
    parser.add_argument(
        "--ledger-events", type=int, default=10_000_000, help="events the ledger run loads"
    )
    parser.add_argument("--ledger-dsn", default=LEDGER_DSN, help="PostgreSQL of the ledger run")
    parser.add_argument("--rates", default="500,1000", help="open-loop rates (req/s)")
    parser.add_argument("--burst", type=int, default=1024, help="clients connecting at once")
    parser.add_argument(
        "--old-limits",
        action="store_true",
        help="the delayed gateway with the former defaults (max_connections 100, backlog 128)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="server.max_in_flight of the delayed gateway (admission control)",
    )
    parser.add_argument(
        "--checkout", help="run the gateways of this source tree (another build), same load"
    )
    args = parser.parse_args()
    groups = {g.strip() for g in args.scenarios.split(",") if g.strip()}
    if groups - set(GROUPS + OPT_IN):
        parser.error(f"unknown scenario groups: {sorted(groups - set(GROUPS + OPT_IN))}")
    # Groups without a gateway process: depth advice's request-path cost, the ledger's
    # own SQL at size.
    in_process = {
        "depth": (run_depth, print_depth),
        "ledger": (lambda: run_ledger(args.ledger_dsn, args.ledger_events), print_ledger),
    }
    results: dict[str, Any] = {}
    for name, (run, show) in in_process.items():
        if name in groups:
            results[name] = run()
            show(results[name])
            groups.discard(name)
    if results and not groups:
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
        return 0
    rates = [float(r) for r in args.rates.split(",")]
    concurrencies = (1, 32)
    if args.quick:
        args.seconds, concurrencies, rates = min(args.seconds, 2.0), (32,), rates[:1]
    if args.tool == "auto":
        args.tool = "wrk" if wrk.available() else "python"
    print(f"load generator: {args.tool}")
    conditions = {"load_average_before": [round(x, 2) for x in procstat.load_average()]}

    bodies = make_bodies(64)
    up_port, delayed_port = free_port(), free_port()
    prefix = f"rg-bench:{uuid.uuid4().hex}:"
    # name -> (workers, extra config, upstream port); each runs as its own process
    gateways: dict[str, tuple[int, str, int]] = {}
    if "closed" in groups:
        gateways |= {
            "gateway": (1, "cache: {backend: none}", up_port),
            "gateway-2w": (2, "cache: {backend: none}", up_port),
            "hit-memory": (1, "cache: {backend: memory}", up_port),
            "miss-memory": (1, "cache: {backend: memory}", up_port),
        }
        if redis_available(REDIS_URL):
            gateways["hit-redis"] = (
                1,
                f'cache: {{backend: redis, key_prefix: "{prefix}"}}\n'
                f'state: {{redis_url: "{REDIS_URL}"}}',
                up_port,
            )
        else:
            print(f"no Redis at {REDIS_URL}: leaving out the hit-redis scenario")
    # Keys added to the delayed gateway's server and provider mappings.
    delayed_server, delayed_provider = "", ""
    if args.old_limits:
        delayed_server, delayed_provider = ", backlog: 128", ", max_connections: 100"
    if args.max_in_flight:
        delayed_server += f", max_in_flight: {args.max_in_flight}"
    if groups & {"openloop", "burst"}:
        gateways["gateway-150ms"] = (1, "cache: {backend: memory}", delayed_port)
    if "soak" in groups:  # the memory cache fills to its bound and churns
        gateways["gateway-soak"] = (1, "cache: {backend: memory}", up_port)
    ports = {name: free_port() for name in gateways}
    procs = {"direct": start([sys.executable, "-m", "bench.upstream", str(up_port)])}
    floor_ports = {}
    if "closed" in groups:  # the framework floors: aiohttp's server and our client (floor.py)
        upstream_url = f"http://127.0.0.1:{up_port}/v2/rerank"
        for name, flags in (("floor", []), ("floor-json", ["--json"])):
            floor_ports[name] = free_port()
            floor = [sys.executable, "-m", "bench.floor", str(floor_ports[name]), upstream_url]
            procs[name] = start([*floor, *flags])
    if groups & {"openloop", "burst"}:
        procs["direct-150ms"] = start(
            [sys.executable, "-m", "bench.upstream", str(delayed_port), "--delay-ms", str(DELAY_MS)]
        )
    configs = []
    for name, (workers, extra, upstream) in gateways.items():
        if name == "gateway-150ms":
            text = gateway_config(upstream, workers, extra, delayed_server, delayed_provider)
        else:
            text = gateway_config(upstream, workers, extra)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        configs.append(f.name)
        procs[name] = start(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                f.name,
                "--port",
                str(ports[name]),
            ],
            cwd=args.checkout or ROOT,
        )
    results: dict = {"rows": [], "openloop": [], "burst": [], "soak": None}
    try:
        wait_port(up_port, procs["direct"])
        if groups & {"openloop", "burst"}:
            wait_port(delayed_port, procs["direct-150ms"])
        for name, port in ports.items():
            wait_port(port, procs[name])
        for name, port in floor_ports.items():
            wait_port(port, procs[name])
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        urls = {"direct": f"http://127.0.0.1:{up_port}/v2/rerank"}
        urls["direct-150ms"] = f"http://127.0.0.1:{delayed_port}/v2/rerank"
        for name, port in {**ports, **floor_ports}.items():
            urls[name] = f"http://127.0.0.1:{port}/v2/rerank"
        pids = {name: proc.pid for name, proc in procs.items()}
        if "closed" in groups:
            closed(args, concurrencies, urls, pids, bodies, headers, results["rows"])
        if "openloop" in groups:
            for rate in rates:
                for name in ("direct-150ms", "gateway-150ms"):
                    results["openloop"].append(
                        open_loop(name, urls[name], pids[name], rate, args.seconds, headers)
                    )
        if "burst" in groups:
            body = bodies[0]
            for name in ("direct-150ms", "gateway-150ms"):
                uvloop.install()
                outcome = asyncio.run(burst(urls[name], body, headers, args.burst))
                results["burst"].append({"scenario": name, **outcome})
        if "soak" in groups:
            results["soak"] = soak(urls["gateway-soak"], pids["gateway-soak"], args, headers)
        results["rss_mb_after"] = {
            name: procstat.rss_mb(pid) for name, pid in pids.items() if name in gateways
        }
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)
        for path in configs:
            os.unlink(path)
        if "hit-redis" in gateways:
            with redis.Redis.from_url(REDIS_URL) as client:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
    conditions["load_average_after"] = [round(x, 2) for x in procstat.load_average()]
    report(results, conditions, args)
    return 0


def closed(
    args: argparse.Namespace,
    concurrencies: Sequence[int],
    urls: dict[str, str],
    pids: dict[str, int],
    bodies: list[bytes],
    headers: dict[str, str],
    rows: list[dict],
) -> None:
    repeated = ("direct", "floor", "floor-json", "gateway", "gateway-2w", "hit-memory", "hit-redis")
    for concurrency in concurrencies:
        for name in repeated:
            if name in urls and name in pids:
                result = load(
                    args.tool, urls[name], bodies, headers, concurrency, args.seconds, pids[name]
                )
                rows.append(row(name, concurrency, result))
        # Every partial and miss body is new: made from a template by either generator.
        for name, source, many in (
            ("partial", "hit-memory", PartialBodies()),
            ("miss-memory", "miss-memory", MissBodies()),
        ):
            result = load(
                args.tool, urls[source], many, headers, concurrency, args.seconds, pids[source]
            )
            rows.append(row(name, concurrency, result))


def soak(url: str, pid: int, args: argparse.Namespace, headers: dict[str, str]) -> dict:
    """`--soak-requests` partial-hit requests (40 cached documents, 10 new), RSS sampled."""
    uvloop.install()
    total = args.soak_requests
    every = max(1, total // 10)
    print(f"soak: {total} requests at concurrency 32 (RSS every {every}) ...", flush=True)
    result = asyncio.run(
        run_soak(url, PartialBodies().body, headers, total, 32, every, lambda: procstat.rss_mb(pid))
    )
    return {
        "requests": result.requests,
        "errors": result.errors,
        "seconds": round(result.seconds, 1),
        "rps": round(result.requests / result.seconds, 1) if result.seconds else None,
        "rss_mb": result.rss_mb,
    }


def open_loop(
    name: str, url: str, pid: int, rate: float, seconds: float, headers: dict[str, str]
) -> dict:
    uvloop.install()
    many = MissBodies()
    cpu_before = procstat.cpu_seconds(pid)
    result: OpenLoopResult = asyncio.run(
        run_open_loop(url, many.__getitem__, headers, rate, seconds)
    )
    cpu_s = procstat.cpu_seconds(pid) - cpu_before  # includes the warm-up second
    warm = int(rate) + result.sent
    return {
        "scenario": name,
        "rate": rate,
        "sent": result.sent,
        "ok": result.ok,
        "errors": result.errors,
        **{f"error {k}": v for k, v in result.error_kinds.items()},
        "p50_ms": round(result.percentile(0.50), 3),
        "p90_ms": round(result.percentile(0.90), 3),
        "p99_ms": round(result.percentile(0.99), 3),
        "max_ms": round(max(result.latencies_ms, default=float("nan")), 3),
        "max_send_lag_ms": round(result.max_lag_ms, 3),
        "cpu_us_per_req": cpu_us(cpu_s, warm),
    }


def report(results: dict, conditions: dict, args: argparse.Namespace) -> None:
    rows = results["rows"]
    summary: dict[str, float] = {}
    if rows:
        head = ("scenario", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms", "cpu µs")
        print("{:<12} {:>4} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8}".format(*head))
        for r in rows:
            cpu = r["cpu_us_per_req"]
            print(
                f"{r['scenario']:<12} {r['concurrency']:>4} {r['requests']:>9} {r['errors']:>6} "
                f"{r['rps']:>9.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                f"{'-' if cpu is None else f'{cpu:.0f}':>8}"
            )
        by = {(r["scenario"], r["concurrency"]): r for r in rows}
        top = max(r["concurrency"] for r in rows)
        direct_rps = by["direct", top]["rps"]
        for name, key in (
            ("gateway", "added_p50_ms_c1"),
            ("floor", "floor_added_p50_ms_c1"),
            ("floor-json", "floor_json_added_p50_ms_c1"),
        ):
            if (name, 1) in by:
                summary[key] = round(by[name, 1]["p50_ms"] - by["direct", 1]["p50_ms"], 3)
        names = ("floor", "floor-json", "gateway", "gateway-2w", "hit-memory", "hit-redis")
        for name in (*names, "partial", "miss-memory"):
            if (name, top) in by and direct_rps:
                summary[f"{name}_vs_direct_throughput_c{top}"] = round(
                    by[name, top]["rps"] / direct_rps, 3
                )
                summary[f"{name}_cpu_us_per_req_c{top}"] = by[name, top]["cpu_us_per_req"]
        print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    if results["openloop"]:
        print(
            f"open loop, upstream answering in {DELAY_MS:.0f} ms, latency from the intended send:"
        )
        head = (
            "scenario",
            "req/s",
            "sent",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lag ms",
            "cpu µs",
        )
        print("{:<14} {:>6} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}".format(*head))
        for r in results["openloop"]:
            print(
                f"{r['scenario']:<14} {r['rate']:>6.0f} {r['sent']:>7} {r['errors']:>6} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
                f"{r['max_send_lag_ms']:>7.1f} {r['cpu_us_per_req'] or 0:>7.0f}"
            )
        by_rate: dict[float, dict[str, dict]] = {}
        for r in results["openloop"]:
            by_rate.setdefault(r["rate"], {})[r["scenario"]] = r
        for rate, pair in by_rate.items():
            if len(pair) == 2:
                d, g = pair["direct-150ms"], pair["gateway-150ms"]
                summary[f"open_{rate:.0f}_added_p50_ms"] = round(g["p50_ms"] - d["p50_ms"], 3)
                summary[f"open_{rate:.0f}_added_p99_ms"] = round(g["p99_ms"] - d["p99_ms"], 3)
                print(
                    f"  {rate:.0f} req/s: added p50 {g['p50_ms'] - d['p50_ms']:.2f} ms, "
                    f"added p99 {g['p99_ms'] - d['p99_ms']:.2f} ms, gateway errors {g['errors']}"
                )
    for b in results["burst"]:
        print(
            f"burst {b['scenario']}: "
            + ", ".join(f"{k} {v}" for k, v in b.items() if k != "scenario")
        )
    if results.get("soak"):
        run = results["soak"]
        print(
            f"soak: {run['requests']} requests, {run['errors']} errors, {run['seconds']} s "
            f"({run['rps']} req/s); RSS MB by requests answered:"
        )
        print("  " + ", ".join(f"{n}: {mb[0] if mb else '-'}" for n, mb in run["rss_mb"]))
    if results.get("rss_mb_after"):
        print(
            "RSS after the runs (MB per process): "
            + ", ".join(f"{k} {v}" for k, v in results["rss_mb_after"].items())
        )
    print(
        f"load average before {conditions['load_average_before']}, "
        f"after {conditions['load_average_after']}"
    )
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "conditions": conditions,
                "load_generator": args.tool,
                "seconds": args.seconds,
                "request": {"documents": 50, "bytes": 40_000},
                **results,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
