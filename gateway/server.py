"""Running the app: its lifecycle signals, and N worker processes sharing a port.

SIGTERM/SIGINT: report not-ready, stop accepting, finish in-flight requests for up to
`server.drain_timeout_s`, close upstream sessions and Redis, exit 0.
SIGHUP: reload the config file; a bad file is logged and the old config keeps serving.
With `--workers N` a parent process starts N workers on one port (`SO_REUSEPORT`),
forwards those signals to them, and has them share Prometheus metrics through files.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from aiohttp import web

from gateway.app import RUNTIME, build_app, reload
from gateway.config import Config, ConfigError, load_config, load_or_default
from gateway.observe.logs import configure_logging, log
from gateway.observe.metrics import MULTIPROC_ENV
from gateway.state.redis_policy import StartupRefused


def run_worker(config_path: str | None, host: str, port: int, reuse_port: bool) -> None:
    config = load_or_default(config_path)
    configure_logging(config.logging.level, config.logging.format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(_serve(config_path, config, host, port, reuse_port))
    except StartupRefused as exc:  # a clear line and exit 1, not a traceback
        log.error("startup_refused", reason=str(exc))
        sys.exit(1)


async def _serve(
    config_path: str | None, config: Config, host: str, port: int, reuse_port: bool
) -> None:
    app = build_app(config)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=config.server.drain_timeout_s
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
    # The SDKs imported at start (boto3, oci) leave a large heap that never changes;
    # freezing it keeps the garbage collector from walking it again and again.
    gc.collect()
    gc.freeze()
    log.info("listening", host=host, port=port, pid=os.getpid(), models=sorted(config.models))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload(app, config_path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()

    app[RUNTIME].draining = True
    in_flight = app[RUNTIME].gateway.pipeline.in_flight
    log.info("draining", in_flight=in_flight, timeout_s=config.server.drain_timeout_s)
    await runner.cleanup()  # stop accepting, wait for handlers, then close providers
    log.info("stopped")


async def _reload(app: web.Application, config_path: str | None) -> None:
    if config_path is None:
        log.info("reload_skipped", reason="serving the embedded default; there is no file")
        return
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("reload_rejected", path=config_path, problems=exc.problems)
        return
    try:
        await reload(app, config)
    except StartupRefused as exc:
        log.error("reload_rejected", path=config_path, problems=[str(exc)])
        return
    log.info("reloaded", path=config_path, models=sorted(config.models))


def serve(config_path: str | None, host: str, port: int, workers: int) -> int:
    if workers <= 1:
        run_worker(config_path, host, port, reuse_port=False)
        return 0
    return _supervise(config_path, host, port, workers)


def _supervise(config_path: str | None, host: str, port: int, workers: int) -> int:
    """Start the workers, forward signals, and stop all if one dies unexpectedly."""
    metrics_dir = tempfile.mkdtemp(prefix="rerank-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # read by each spawned worker at import
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = [
        ctx.Process(target=run_worker, args=(config_path, host, port, True), name=f"worker-{i}")
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return _wait(procs, lambda: stopping)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait(procs: list[BaseProcess], stopping: Callable[[], bool]) -> int:
    from multiprocessing.connection import wait

    from prometheus_client import multiprocess

    alive = {proc.sentinel: proc for proc in procs}
    worst = 0
    while alive:
        for sentinel in wait(list(alive)):
            proc = alive.pop(sentinel)  # type: ignore[arg-type]
            proc.join()
            if proc.pid is not None:
                multiprocess.mark_process_dead(proc.pid)
            code = proc.exitcode or 0
            worst = max(worst, abs(code))
            if not stopping() and alive:
                log.error("worker_died", worker=proc.name, exitcode=code)
                for other in alive.values():
                    other.terminate()
    return worst
