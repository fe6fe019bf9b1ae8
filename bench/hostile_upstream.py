"""A gateway's memory when its upstream turns hostile: a gzip bomb and endless headers.

    python -m bench.hostile_upstream [--root DIR] [--bomb-gib 2]

Starts a hostile upstream and a gateway (`rerank-gateway serve`, one attempt per request,
an 8 s deadline) as separate processes, sends one rerank request per case and reads the
gateway's resident memory from /proc before, at its peak (VmHWM) and after. Cases:

- `gzip-bomb`: a 200 answer of `--bomb-gib` GiB of zeros, gzip-compressed (~1 MB per GiB);
- `endless-headers`: a status line, then 1 KB header lines as fast as the gateway reads
  them, until it hangs up or 10 s pass.

`--root` runs the gateway from another source tree (an export of an older commit, say),
so the same script measures before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx

from bench.__main__ import ROOT, free_port, gateway_config, wait_port

HEADERS_FOR_S = 10.0
CASES = ("gzip-bomb", "endless-headers")


def bomb_file(gib: int) -> Path:
    """`gib` GiB of zeros gzip-compressed, made once and kept in the temp directory."""
    path = Path(tempfile.gettempdir()) / f"rerank-bench-zeros-{gib}g.gz"
    if not path.exists():
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = bytes(1024 * 1024)
        with open(path.with_suffix(".part"), "wb") as f:
            for _ in range(gib * 1024):
                f.write(packer.compress(block))
            f.write(packer.flush())
        path.with_suffix(".part").rename(path)
    return path


# -- the hostile upstream (run as its own process: its memory is not the gateway's)


async def _serve(case: str, port: int, bomb: Path | None) -> None:
    payload = bomb.read_bytes() if bomb is not None else b""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if case == "gzip-bomb":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload)
                )
                writer.write(payload)
                await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\n")
                line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
                until = time.monotonic() + HEADERS_FOR_S
                while time.monotonic() < until and not writer.is_closing():
                    writer.write(line * 64)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the measurement


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the peak so far) of one process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


def measure(case: str, root: Path, bomb: Path | None) -> dict[str, object]:
    upstream_port, gateway_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.hostile_upstream",
            "--serve",
            case,
            "--port",
            str(upstream_port),
        ]
        + (["--bomb", str(bomb)] if bomb else []),
        cwd=ROOT,
    )
    config = gateway_config(upstream_port).replace(
        "deployments: [{provider: upstream}]}",
        "deployments: [{provider: upstream}], timeout_s: 8, max_attempts: 1}",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", f.name, "--port", str(gateway_port)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(upstream_port, upstream)
        wait_port(gateway_port, gateway)
        with httpx.Client(timeout=120) as client:  # warm up: one request on the local path
            client.get(f"http://127.0.0.1:{gateway_port}/healthz")
        before = memory_mb(gateway.pid)["VmRSS"]
        started = time.monotonic()
        with httpx.Client(timeout=120) as client:
            answer = client.post(
                f"http://127.0.0.1:{gateway_port}/v2/rerank",
                headers={"Authorization": "Bearer bench-team-key"},
                json={"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]},
            )
        took = time.monotonic() - started
        time.sleep(1.0)  # let the gateway finish whatever the answer left behind
        after = memory_mb(gateway.pid)
        return {
            "case": case,
            "status": answer.status_code,
            "message": answer.json().get("message", "")[:150],
            "seconds": round(took, 2),
            "rss_before_mb": before,
            "rss_peak_mb": after["VmHWM"],
            "rss_after_mb": after["VmRSS"],
        }
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            proc.wait(timeout=30)
        os.unlink(f.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the gateway's source tree")
    parser.add_argument("--bomb-gib", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--serve", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bomb", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.port, args.bomb))
        return 0
    bomb = bomb_file(args.bomb_gib)
    print(
        f"gateway from {args.root}; bomb {bomb.stat().st_size / 1e6:.2f} MB on the wire, "
        f"{args.bomb_gib} GiB decoded; load average {os.getloadavg()[0]:.2f}"
    )
    for case in args.cases:
        result = measure(case, args.root, bomb if case == "gzip-bomb" else None)
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
