"""The gateway side by side with LiteLLM's proxy in one run: `python -m bench.versus`.

Both proxies forward Cohere rerank calls to the same fast fake upstream
(`bench.upstream`), one process each, and are driven one after the other by the same
closed-loop generator (wrk when installed, else the Python one; `--tool`) with the same
bodies: every body new (50 documents, ~40 KB), so the gateway (memory cache on) misses
and forwards each, as LiteLLM does. Reported per
target: req/s and CPU µs per request at concurrency 32, p50 at concurrency 1 and what
each proxy adds to `direct`'s p50 there, and the gateway's multiples of LiteLLM.

LiteLLM is not a dependency of the project: install it into a venv of its own
(`python -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]'`) and
name that venv's `litellm` with `--litellm`. Without it the LiteLLM rows are left out.

    python -m bench.versus --litellm /tmp/litellm/bin/litellm --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import procstat, wrk
from bench.__main__ import (
    KEY,
    ROOT,
    MissBodies,
    free_port,
    gateway_config,
    load,
    start,
    wait_port,
)

LITELLM_KEY = "sk-bench-master"


def litellm_config(upstream_port: int) -> str:
    return f"""
model_list:
  - model_name: rerank-v3.5
    litellm_params:
      model: cohere/rerank-v3.5
      api_base: "http://127.0.0.1:{upstream_port}"
      api_key: upstream-key
litellm_settings:
  drop_params: true
  set_verbose: false
general_settings:
  master_key: {LITELLM_KEY}
"""


def drive(
    tool: str, url: str, key: str, pid: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    result = load(tool, url, MissBodies(), headers, concurrency, seconds, pid)
    cpu = result.cpu_s * 1e6 / result.requests if result.cpu_s and result.requests else None
    return {
        "requests": result.requests,
        "errors": result.errors,
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50, 3),
        "cpu_us": round(cpu, 1) if cpu else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.versus")
    parser.add_argument("--litellm", help="the `litellm` command of LiteLLM's own venv")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--checkout", help="run the gateway of this source tree (another build)")
    parser.add_argument(
        "--tool", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if installed"
    )
    args = parser.parse_args()
    if args.tool == "auto":
        args.tool = "wrk" if wrk.available() else "python"
    print(f"load generator: {args.tool}")
    litellm = args.litellm or shutil.which("litellm")
    up_port, gw_port, ll_port = free_port(), free_port(), free_port()
    configs = []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(gateway_config(up_port, 1, "cache: {backend: memory}"))
    configs.append(f.name)
    procs = {
        "direct": start([sys.executable, "-m", "bench.upstream", str(up_port)]),
        "gateway": subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", f.name, "--port", str(gw_port)],
            cwd=args.checkout or ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
    }
    urls = {
        "direct": f"http://127.0.0.1:{up_port}/v2/rerank",
        "gateway": f"http://127.0.0.1:{gw_port}/v2/rerank",
    }
    keys = {"direct": KEY, "gateway": KEY}
    if litellm:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as g:
            g.write(litellm_config(up_port))
        configs.append(g.name)
        env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
        procs["litellm"] = subprocess.Popen(
            [litellm, "--config", g.name, "--port", str(ll_port), "--num_workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        urls["litellm"] = f"http://127.0.0.1:{ll_port}/v2/rerank"
        keys["litellm"] = LITELLM_KEY
    else:
        print("no litellm command (--litellm): leaving LiteLLM out")
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    load_before = procstat.load_average()
    try:
        wait_port(up_port, procs["direct"])
        wait_port(gw_port, procs["gateway"])
        if "litellm" in procs:
            wait_port(ll_port, procs["litellm"], timeout=180)
        for concurrency in (1, 32):
            for name in urls:
                pid = procs[name].pid
                rows.setdefault(name, {})[concurrency] = drive(
                    args.tool, urls[name], keys[name], pid, concurrency, args.seconds
                )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # LiteLLM may not stop on SIGTERM alone
                proc.kill()
                proc.wait(10)
        for path in configs:
            os.unlink(path)
    load_after = procstat.load_average()
    print(f"{'target':<8} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'cpu µs':>8} {'errors':>6}")
    for name, by in rows.items():
        for c, r in by.items():
            print(
                f"{name:<8} {c:>3} {r['rps']:>8.1f} {r['p50_ms']:>8.3f} "
                f"{r['cpu_us'] or float('nan'):>8.0f} {r['errors']:>6}"
            )
    direct = rows["direct"]
    for name in ("gateway", "litellm"):
        if name in rows:
            added = rows[name][1]["p50_ms"] - direct[1]["p50_ms"]
            share = rows[name][32]["rps"] / direct[32]["rps"]
            print(f"{name}: added p50 at c=1 {added:.2f} ms; c=32 {share:.0%} of direct's req/s")
    if "litellm" in rows:
        g, ll = rows["gateway"], rows["litellm"]
        print(
            f"gateway / litellm: {g[32]['rps'] / ll[32]['rps']:.1f}x the req/s at c=32, "
            f"{ll[32]['cpu_us'] / g[32]['cpu_us']:.1f}x less CPU per request"
        )
    print(f"load average before {load_before}, after {load_after}")
    out = {"tool": args.tool, "rows": rows, "load_average": [load_before, load_after]}
    Path(ROOT / "bench" / "versus.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
