"""`python -m bench.slowloris`: what slow and idle clients cost a gateway, and whether one
team's slow senders keep another team out (issue 21, findings 1 and 2).

Starts a gateway process (`rerank-gateway serve`, the offline `local-bm25` model, two
keyed teams, a metrics port, the settings' defaults otherwise) and measures, one scenario
after another, each on fresh connections:

- `headers`: 300 connections each send a request line and 120 header lines of 8 KB and
  never finish the head; the gateway's RSS before, at its peak and after.
- `idle`, `slow-header`, `slow-body`: 2,000 connections that send nothing; one header
  line every 5 s; or a complete head (with a team key) and one body byte every 5 s.
  After `--seconds` N: how many the gateway still holds open.
- `metrics-idle`: the same as `idle`, 500 connections, on the metrics port.
- `admission`: on a second gateway with `server.max_in_flight: 20`, 20 requests of team
  `slow` that send one body byte of 200 and hold on; then 20 requests of team `other`,
  one after another: the statuses it gets.

Every loop is bounded (connection counts, `--seconds`), and the traffic stays on
loopback. Prints a table and writes `bench/slowloris.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from bench import procstat
from bench.__main__ import ROOT, free_port, wait_port

SLOW_KEY, OTHER_KEY = "bench-slow-team-key", "bench-other-team-key"
BODY = b'{"model": "local-bm25", "query": "orbit", "documents": ["rockets reach orbit"]}'
SCENARIOS = ("headers", "idle", "slow-header", "slow-body", "metrics-idle", "admission")


def config(metrics_port: int, max_in_flight: int | None) -> str:
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    limit = "null" if max_in_flight is None else max_in_flight
    return f"""
server: {{max_in_flight: {limit}, metrics_port: {metrics_port}}}
auth: {{mode: keys}}
teams:
  slow: {{key_sha256: ["{digest(SLOW_KEY)}"]}}
  other: {{key_sha256: ["{digest(OTHER_KEY)}"]}}
providers: {{offline: {{type: local}}}}
models: {{local-bm25: {{deployments: [{{provider: offline}}]}}}}
logging: {{level: error}}
"""


def head(key: str | None = None, length: int | None = None, end: bool = True) -> bytes:
    lines = [b"POST /v2/rerank HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json"]
    if key is not None:
        lines.append(b"Authorization: Bearer " + key.encode())
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + (b"\r\n\r\n" if end else b"\r\n")


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect_many(port: int, count: int) -> list[Conn]:
    """`count` connections, opened in batches so the listen queue never overflows."""
    conns: list[Conn] = []
    for start in range(0, count, 200):
        batch = [
            asyncio.open_connection("127.0.0.1", port)
            for _ in range(start, min(count, start + 200))
        ]
        conns.extend(await asyncio.gather(*batch))
    return conns


async def still_open(conns: list[Conn]) -> int:
    """How many connections the server has not closed (EOF or reset) by now."""

    async def open_one(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(), 1.0)  # returns only at EOF
        except TimeoutError:
            return True
        except OSError:
            return False
        return False

    return sum(await asyncio.gather(*(open_one(r) for r, _ in conns)))


async def send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    try:
        writer.write(data)
        await writer.drain()
    except OSError:
        return False
    return True


def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.transport.abort()


async def drip(conns: list[Conn], piece: bytes, seconds: float, every: float = 5.0) -> None:
    """Send `piece` on every connection every `every` seconds for `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(every, left))
        if time.monotonic() < deadline:
            await asyncio.gather(*(send(w, piece) for _, w in conns))


async def held_open(
    port: int, count: int, seconds: float, first: bytes, piece: bytes | None
) -> dict[str, object]:
    conns = await connect_many(port, count)
    if first:
        await asyncio.gather(*(send(w, first) for _, w in conns))
    if piece is None:
        await asyncio.sleep(seconds)
    else:
        await drip(conns, piece, seconds)
    left = await still_open(conns)
    close_all(conns)
    return {"connections": count, "seconds": seconds, "still_open": left}


async def headers_flood(port: int, pid: int, seconds: float) -> dict[str, object]:
    before = max(procstat.rss_mb(pid))
    line = b"X-Pad-%d: " + b"a" * 8000 + b"\r\n"
    peak = before
    conns = await connect_many(port, 300)

    async def flood(writer: asyncio.StreamWriter) -> bool:
        if not await send(writer, head(end=False)):
            return False
        for i in range(120):
            if not await send(writer, line % i):
                return False
        return True

    task = asyncio.gather(*(flood(w) for _, w in conns))
    while not task.done():
        peak = max(peak, *procstat.rss_mb(pid))
        await asyncio.sleep(0.1)
    delivered = sum(task.result())
    for _ in range(int(seconds * 10)):  # held, never finished: what stays resident
        peak = max(peak, *procstat.rss_mb(pid))
        await asyncio.sleep(0.1)
    held = max(procstat.rss_mb(pid))
    left = await still_open(conns)
    close_all(conns)
    return {
        "connections": 300,
        "all_120_lines_written": delivered,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "rss_after_s_mb": held,
        "seconds": seconds,
        "still_open": left,
    }


async def exchange(port: int, data: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 30)
        return int(status.split()[1])
    finally:
        writer.transport.abort()


async def admission(port: int) -> dict[str, object]:
    conns = await connect_many(port, 20)
    for _, writer in conns:  # one byte of a 200-byte body each, then nothing
        await send(writer, head(SLOW_KEY, 200) + b"{")
    await asyncio.sleep(1.0)
    other = Counter()
    for _ in range(20):
        other[await exchange(port, head(OTHER_KEY, len(BODY)) + BODY)] += 1
    slow_after = Counter()
    for _ in range(5):  # the slow team itself, with a whole body
        slow_after[await exchange(port, head(SLOW_KEY, len(BODY)) + BODY)] += 1
    close_all(conns)
    return {
        "max_in_flight": 20,
        "slow_senders": 20,
        "other_team_statuses": dict(other),
        "slow_team_whole_bodies": dict(slow_after),
    }


@contextlib.contextmanager
def gateway(max_in_flight: int | None = None) -> Iterator[tuple[int, int, int]]:
    """A gateway process; yields its port, metrics port and pid."""
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(config(metrics_port, max_in_flight))
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(port, proc)
            wait_port(metrics_port, proc)
            yield port, metrics_port, proc.pid
            if proc.poll() is not None:
                raise RuntimeError("the gateway died during the scenarios")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


async def run(scenarios: list[str], seconds: float) -> dict[str, object]:
    results: dict[str, object] = {"load_average_at_start": os.getloadavg()}
    with gateway() as (port, metrics_port, pid):
        steps: dict[str, Callable[[], Awaitable[dict[str, object]]]] = {
            "headers": lambda: headers_flood(port, pid, min(seconds, 5.0)),
            "idle": lambda: held_open(port, 2000, seconds, b"", None),
            "slow-header": lambda: held_open(port, 2000, seconds, head(end=False), b"X-a: b\r\n"),
            "slow-body": lambda: held_open(port, 2000, seconds, head(SLOW_KEY, 1000) + b"{", b" "),
            "metrics-idle": lambda: held_open(metrics_port, 500, seconds, b"", None),
        }
        for name in scenarios:
            if name in steps:
                print(f"{name} ...", flush=True)
                results[name] = await steps[name]()
                await asyncio.sleep(1.0)  # let the gateway settle between scenarios
        results["rss_end_mb"] = max(procstat.rss_mb(pid))
    if "admission" in scenarios:
        print("admission ...", flush=True)
        with gateway(max_in_flight=20) as (port, _, _):
            results["admission"] = await admission(port)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="N: how long clients hold on")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "slowloris.json"))
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    results = asyncio.run(run(scenarios, args.seconds))
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
