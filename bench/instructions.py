"""Instructions per request of one gateway process, counted by valgrind's callgrind:
`python -m bench.instructions`.

CPU time per request moves with whatever else runs on the machine (another test suite,
the load generator itself, frequency scaling). An instruction count does not: the same
build serving the same requests executes the same instructions within a percent or so,
however loaded the machine is. So a before/after comparison on a shared machine is
made here, scenario by scenario, and the wall-clock rows of `make bench` say what the
counts are worth in time.

How: the fast fake upstream runs as usual; the gateway runs under
`valgrind --tool=callgrind --instr-atstart=no` (it serves about 50 times slower, which
is fine: nothing here is timed). After a warm-up, counting is switched on with
`callgrind_control -i on`, a fixed number of requests is sent at a fixed concurrency,
counting is switched off and the total is read. Needs valgrind (`apt-get install
valgrind`).

    python -m bench.instructions --scenarios gateway,hit-memory,hit-redis --requests 200
    python -m bench.instructions --checkout ../main   # the same for another build
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp

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

FLOORS = ("floor", "floor-json")


async def send(url: str, bodies: Sequence[bytes], first: int, count: int, concurrency: int) -> int:
    """`count` requests (bodies `first`, `first + 1`, ...), `concurrency` at a time; the
    number answered 200."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    ok = 0
    queue = iter(range(first, first + count))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            nonlocal ok
            for i in queue:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    ok += r.status == 200

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return ok


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def total_instructions(out_dir: str) -> int:
    """Sum of the `summary:`/`totals:` lines of every dump callgrind wrote."""
    total = 0
    for path in Path(out_dir).glob("callgrind.out*"):
        text = path.read_text(errors="replace")
        found = re.findall(r"^(?:summary|totals):\s*(\d+)", text, re.M)
        if found:
            total += int(found[-1])
    return total


def measure(
    scenario: str, requests: int, warmup: int, concurrency: int, checkout: str | None = None
) -> dict[str, object]:
    """`checkout`: run the gateway of that source tree (another build), else this one."""
    up_port, gw_port = free_port(), free_port()
    prefix = f"rg-bench:{uuid.uuid4().hex}:"
    extra = CACHES.get(scenario, "").replace("PREFIX", prefix)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(gateway_config(up_port, 1, extra))
    out_dir = tempfile.mkdtemp(prefix="callgrind-")
    upstream = start([sys.executable, "-m", "bench.upstream", str(up_port)])
    if scenario in FLOORS:  # aiohttp's server and the upstream client (bench/floor.py)
        served = ["bench.floor", str(gw_port), f"http://127.0.0.1:{up_port}/v2/rerank"]
        served += ["--json"] if scenario == "floor-json" else []
    else:
        served = ["gateway", "serve", "--config", f.name, "--port", str(gw_port)]
    gateway = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            sys.executable, "-m", *served,
        ],
        cwd=checkout or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    bodies: Sequence[bytes] = {"miss-memory": MissBodies(), "partial": PartialBodies()}.get(
        scenario
    ) or make_bodies(64)
    url = f"http://127.0.0.1:{gw_port}/v2/rerank"
    try:
        wait_port(up_port, upstream)
        wait_port(gw_port, gateway, timeout=300)
        asyncio.run(send(url, bodies, 0, warmup, concurrency))  # caches filled, code warm
        first = warmup if scenario in ("miss-memory", "partial") else 0
        control("-i", "on", str(gateway.pid))
        ok = asyncio.run(send(url, bodies, first, requests, concurrency))
        control("-i", "off", str(gateway.pid))
        control("-d", str(gateway.pid))
    finally:
        gateway.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.wait(120)
        if gateway.poll() is None:
            gateway.kill()
        upstream.terminate()
        upstream.wait(10)
        os.unlink(f.name)
    total = total_instructions(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "scenario": scenario,
        "requests": requests,
        "ok": ok,
        "concurrency": concurrency,
        "instructions_per_request": round(total / requests) if requests else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.instructions")
    parser.add_argument(
        "--scenarios",
        default="gateway,hit-memory,miss-memory,hit-redis",
        help="of " + ", ".join([*FLOORS, *CACHES]) + " (floors: bench/floor.py)",
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--checkout", help="measure the gateway of this source tree (e.g. a worktree of main)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 1
    for scenario in (s.strip() for s in args.scenarios.split(",") if s.strip()):
        row = measure(scenario, args.requests, args.warmup, args.concurrency, args.checkout)
        per = row["instructions_per_request"]
        millions = per / 1e6 if isinstance(per, int) else float("nan")
        print(
            f"{scenario:<12} {row['ok']}/{row['requests']} answered, "
            f"c={row['concurrency']}: {millions:.3f} M instructions per request",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
