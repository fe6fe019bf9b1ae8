"""Running the app: one process, or N worker processes sharing a port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.app import build_app
from gateway.config import Config
from gateway.logs import configure_logging, log


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(load: Callable[[], Config], host: str, port: int, reuse_port: bool) -> None:
    config = load()
    configure_logging(config.logging.level, config.logging.format)
    _event_loop_policy()
    app = build_app(config)
    log.info("listening", host=host, port=port, models=sorted(config.models))
    web.run_app(
        app,
        host=host,
        port=port,
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        handle_signals=True,
        shutdown_timeout=config.server.request_timeout_s,
    )


def serve(load: Callable[[], Config], host: str, port: int, workers: int) -> int:
    if workers <= 1:
        run_worker(load, host, port, reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run_worker, args=(load, host, port, True), name=f"worker-{i}")
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.kill() if signum == signal.SIGKILL else proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((abs(p.exitcode or 0) for p in procs), default=0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the rerank-gateway command")
