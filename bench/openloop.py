"""Open-loop load: requests sent at a constant rate, whatever the answers do.

A closed-loop client waits for each answer before sending again, so a slow server slows
its own load and hides its queueing (coordinated omission). Here send i is due at
`start + i / rate`; a scheduler task starts each send when it is due (catching up at
once if the loop was late), and latency is measured from the due time, not from when
the send actually started. Connections are not capped: a send that finds no idle
keep-alive connection opens a new one, as independent clients would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass
class OpenLoopResult:
    rate: float
    seconds: float
    sent: int
    ok: int
    errors: int
    latencies_ms: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    max_lag_ms: float = 0.0  # how late the scheduler started a send, at worst

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_open_loop(
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    warmup_s: float = 1.0,
    timeout_s: float = 30.0,
) -> OpenLoopResult:
    """Send `rate` requests per second for `warmup_s + seconds`; measure the last `seconds`."""
    result = OpenLoopResult(rate, seconds, 0, 0, 0)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05
        measured_from = int(warmup_s * rate)
        total = measured_from + int(seconds * rate)

        async def send(i: int, due: float) -> None:
            kind = None
            try:
                async with session.post(url, data=body(i), headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        kind = f"status {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                kind = exc.__class__.__name__
            done = time.perf_counter()
            if i < measured_from:
                return
            if kind is None:
                result.ok += 1
                result.latencies_ms.append((done - due) * 1000.0)
            else:
                result.errors += 1
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1

        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and start + i / rate <= now:
                due = start + i / rate
                if i >= measured_from:
                    result.max_lag_ms = max(result.max_lag_ms, (now - due) * 1000.0)
                task = asyncio.create_task(send(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        result.sent = total - measured_from
        while tasks:
            await asyncio.gather(*list(tasks))
    return result


async def burst(
    url: str, body: bytes, headers: dict[str, str], clients: int, timeout_s: float = 30.0
) -> dict[str, int | float]:
    """`clients` connections opened at once, each sending one request on its own
    connection: does the listener take them all (no resets, no refusals)?"""
    errors: dict[str, int] = {}
    ok = 0
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.perf_counter()

    async def one() -> None:
        nonlocal ok
        # A connector (so a connection) per client: every one is a new TCP handshake.
        connector = aiohttp.TCPConnector(limit=1, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                        return
                    kind = f"status {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                kind = exc.__class__.__name__
            errors[kind] = errors.get(kind, 0) + 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return {
        "clients": clients,
        "ok": ok,
        "errors": sum(errors.values()),
        "seconds": round(time.perf_counter() - started, 3),
        **{f"error {k}": v for k, v in errors.items()},
    }
