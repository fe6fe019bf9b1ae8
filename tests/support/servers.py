"""Run aiohttp apps on loopback in a background event loop, for tests.

The sync `cohere` client blocks its thread, so the gateway and the fakes it calls
live in a loop of their own. Each app binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from gateway.http.edge import GatewayRunner
from gateway.http.runtime import RUNTIME

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerLoop:
    """A background thread running an event loop that hosts apps until `close()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app: web.Application, port: int = 0) -> str:
        """Start `app` on 127.0.0.1 and return its base URL."""
        return self.run(self._serve(app, port))

    async def _serve(self, app: web.Application, port: int) -> str:
        # A gateway app is served as in production (JSON answers to malformed HTTP).
        runner_class = GatewayRunner if RUNTIME in app else web.AppRunner
        runner = runner_class(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        site = web.SockSite(runner, sock)
        await site.start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
