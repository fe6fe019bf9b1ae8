"""Load from `wrk` when it is installed: less CPU on the load side than Python's."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import LoadResult

# Prints a JSON summary at the end of a run (both scripts end with it).
_SUMMARY = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

# Cycles through the bodies (one JSON per line).
_SCRIPT = (
    r"""
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, nil, bodies[i])
end
"""
    + _SUMMARY
)

# Every body new (bench's TemplateBodies): the template's pieces, one per line, joined
# with a mark of the request's own at each gap, `<salt><thread>-<n>-<k>`.
_TEMPLATE_SCRIPT = (
    r"""
local pieces = {}
local salt, n = "", 0
local threads = 0
setup = function(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
init = function(args)
  for line in io.lines(args[1]) do pieces[#pieces + 1] = line end
  salt = args[2] .. tostring(thread_id)
end
request = function()
  n = n + 1
  local parts = {pieces[1]}
  for k = 2, #pieces do
    parts[#parts + 1] = salt .. "-" .. n .. "-" .. (k - 1)
    parts[#parts + 1] = pieces[k]
  end
  return wrk.format("POST", nil, nil, table.concat(parts))
end
"""
    + _SUMMARY
)


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    template: tuple[list[bytes], str] | None = None,
) -> LoadResult:
    """`bodies` cycled through, or with `template` (pieces, salt) every body new."""
    with tempfile.TemporaryDirectory() as tmp:
        script, data = Path(tmp, "bench.lua"), Path(tmp, "bodies.jsonl")
        script.write_text(_SCRIPT if template is None else _TEMPLATE_SCRIPT)
        lines = bodies if template is None else template[0]
        data.write_bytes(b"\n".join(lines) + b"\n")
        extra = [] if template is None else [template[1]]
        header_args = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
        threads = min(2, concurrency)
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                *header_args,
                "-s",
                str(script),
                url,
                "--",
                str(data),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    # wrk gives percentiles, not every latency: keep p50 and p99 as the samples.
    return LoadResult(
        requests=summary["requests"],
        errors=summary["errors"],
        seconds=summary["seconds"],
        latencies_ms=[],
        fixed_p50_ms=summary["p50_us"] / 1000.0,
        fixed_p99_ms=summary["p99_us"] / 1000.0,
    )
