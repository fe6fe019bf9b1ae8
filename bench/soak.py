"""Soak: a long closed-loop run that reads the gateway's resident memory as it goes.

Does memory settle, or grow with the requests served? `run_soak` sends `total` requests
over `concurrency` keep-alive connections (the minimal client of `bench.openloop`, so
the generator itself stays cheap for a million requests) and samples the server's RSS
every `every` requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.openloop import _Conn, target


@dataclass
class SoakResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    # (requests answered so far, RSS in MB of each process of the server)
    rss_mb: list[tuple[int, list[float]]] = field(default_factory=list)


async def run_soak(
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    total: int,
    concurrency: int,
    every: int,
    rss: Callable[[], list[float]],
    timeout_s: float = 30.0,
) -> SoakResult:
    host, port, head = target(url, headers)
    loop = asyncio.get_running_loop()
    result = SoakResult(rss_mb=[(0, rss())])
    next_i = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal next_i
        conn: _Conn | None = None
        while next_i < total:
            i, next_i = next_i, next_i + 1
            if conn is None or conn.closed:
                transport, conn = await loop.create_connection(_Conn, host, port)
                conn.transport = transport  # type: ignore[assignment]
            try:
                status = await asyncio.wait_for(conn.send(head, body(i)), timeout_s)
            except (OSError, TimeoutError):
                status = 0
                conn = None
            result.requests += 1
            result.errors += status != 200
            if result.requests % every == 0:
                result.rss_mb.append((result.requests, rss()))
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
