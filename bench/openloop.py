"""Open-loop load: requests sent at a constant rate, whatever the answers do.

A closed-loop client waits for each answer before sending again, so a slow server slows
its own load and hides its queueing (coordinated omission). Here send i is due at
`start + i / rate`; a scheduler task starts each send when it is due (catching up at
once if the loop was late), and latency is measured from the due time, not from when
the send actually started. Connections are not capped: a send that finds no idle
keep-alive connection opens a new one, as independent clients would. The client is a
minimal HTTP/1.1 one on asyncio's protocols, so the generator itself costs little.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, bodies by Content-Length.

    The load generator's own cost must stay small next to the server's: this is a tenth
    of what aiohttp's client spends on a request, so the generator keeps its rate on a
    busy machine."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.answer: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.answer is None:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else None])
        if len(self.buf) >= end + 4 + length:
            status = int(self.buf[9:12])
            del self.buf[: end + 4 + length]
            if b"connection: close" in head:
                self.closed = True
            if not self.answer.done():
                self.answer.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionResetError("connection lost"))

    def send(self, head: bytes, data: bytes) -> asyncio.Future[int]:
        """POST `data` (`head`: the request line and headers from `target`); the future
        resolves to the answer's status."""
        self.answer = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(data), data))
        return self.answer


def target(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """Host, port and the request head (all but Content-Length) of POSTs to `url`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return host, port, head.encode()


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
    host, port, head = target(url, headers)
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    measured_from = int(warmup_s * rate)
    total = measured_from + int(seconds * rate)

    async def send(i: int, due: float) -> None:
        kind = None
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                transport, conn = await loop.create_connection(_Conn, host, port)
                conn.transport = transport  # uvloop may call connection_made later
            status = await asyncio.wait_for(conn.send(head, body(i)), timeout_s)
            if status != 200:
                kind = f"status {status}"
        except (OSError, TimeoutError) as exc:
            kind = exc.__class__.__name__
        done = time.perf_counter()
        if conn is not None:
            if kind is None and not conn.closed:
                idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
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
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
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
