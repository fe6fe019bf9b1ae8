"""Closed-loop load generator: C concurrent clients posting for a fixed time."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    fixed_p50_ms: float | None = None  # when the load tool reports percentiles only
    fixed_p99_ms: float | None = None
    cpu_s: float | None = None  # CPU the measured process spent over the measured window

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p99(self) -> float:
        if self.fixed_p99_ms is not None:
            return self.fixed_p99_ms
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    @property
    def p50(self) -> float:
        if self.fixed_p50_ms is not None:
            return self.fixed_p50_ms
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def run_load(
    url: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    warmup_s: float = 1.0,
    cpu_probe: Callable[[], float] | None = None,
) -> LoadResult:
    """`cpu_probe` (CPU seconds of the server so far) is read when the measured window
    opens and once every request has finished."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop = measure_from + seconds

        async def client(worker: int) -> None:
            nonlocal errors
            i = worker
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                t1 = time.perf_counter()
                i += concurrency
                if t0 >= measure_from:
                    if ok:
                        latencies.append((t1 - t0) * 1000.0)
                    else:
                        errors += 1

        async def window_opens() -> float:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            return cpu_probe() if cpu_probe else 0.0

        opened = asyncio.create_task(window_opens())
        await asyncio.gather(*(client(w) for w in range(concurrency)))
        cpu_s = cpu_probe() - await opened if cpu_probe else None
    return LoadResult(len(latencies), errors, seconds, latencies, cpu_s=cpu_s)
