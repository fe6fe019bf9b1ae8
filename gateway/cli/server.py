"""Running the app: its lifecycle signals, and N worker processes sharing a port.

Start: the port is checked first (a port in use is a one-line error and exit status 1),
then one `starting` line sums up what is served (see gateway.cli.startup).
SIGTERM/SIGINT: report not-ready, stop accepting, finish in-flight requests for up to
`server.drain_timeout_s`, close upstream sessions and Redis, exit 0.
SIGHUP: reload the config file; a bad file is logged and the old config keeps serving;
changed settings that only a restart applies (server.host, port, workers,
max_body_bytes and the edge limits) are logged as `restart_needed`.
With `--workers N` a parent process starts N workers on one port (`SO_REUSEPORT`),
forwards those signals to them, restarts a worker that dies (with back-off), and has
them share Prometheus metrics through files. Every process logs in the configured format.
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
import time
from multiprocessing.process import BaseProcess

from aiohttp import web

from gateway.app import build_app, build_metrics_app
from gateway.cli.startup import port_problem, restart_needed, summary, version
from gateway.config import Config, ConfigError, load_config, load_or_default
from gateway.config.advice import plain_http_warnings, scale_warnings
from gateway.http.edge import GatewayRunner
from gateway.http.runtime import RUNTIME, reload
from gateway.observe.logs import configure_logging, log
from gateway.observe.metrics import MULTIPROC_ENV
from gateway.state.redis_policy import StartupRefused


def run_worker(config_path: str | None, host: str, port: int, reuse_port: bool) -> None:
    config = load_or_default(config_path)
    configure_logging(config.logging.level, config.logging.format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        code = asyncio.run(_serve(config_path, config, host, port, reuse_port))
    else:
        code = uvloop.run(_serve(config_path, config, host, port, reuse_port))
    if code:
        raise SystemExit(code)


async def _serve(
    config_path: str | None, config: Config, host: str, port: int, reuse_port: bool
) -> int:
    app = build_app(config)
    runner = GatewayRunner(  # malformed HTTP answered in Cohere's shape
        app, access_log=None, handle_signals=False, shutdown_timeout=config.server.drain_timeout_s
    )
    # Handlers first: a SIGTERM that arrives while starting becomes a clean drain.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()  # starts the gateway: checks the state Redis, loads API keys
    except StartupRefused as exc:  # one clear line and exit 1, not a traceback
        log.error("startup_refused", reason=str(exc))
        return 1
    try:
        await web.TCPSite(
            runner, host, port, reuse_port=reuse_port, backlog=config.server.backlog
        ).start()
    except OSError as exc:  # lost a race with another process since the check
        log.error("cannot_listen", host=host, port=port, error=exc.strerror)
        await runner.cleanup()  # closes the upstream sessions: no "Unclosed" noise
        return 1
    # The SDKs imported at start (boto3, oci) leave a large heap that never changes;
    # freezing it keeps the garbage collector from walking it again and again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(config.server.gc_threshold, *gc.get_threshold()[1:])  # docs/performance.md
    private = await _start_metrics_listener(app, config, reuse_port)
    log.info("listening", host=host, port=port, models=sorted(config.models))
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload(app, config_path, alone=not reuse_port))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()

    app[RUNTIME].draining = True
    in_flight = app[RUNTIME].gateway.pipeline.in_flight
    log.info("draining", in_flight=in_flight, timeout_s=config.server.drain_timeout_s)
    await runner.cleanup()  # stop accepting, wait for handlers, then close providers
    if private is not None:
        await private.cleanup()
    log.info("stopped")
    return 0


async def _start_metrics_listener(
    app: web.Application, config: Config, reuse_port: bool
) -> web.AppRunner | None:
    """/metrics and the status page on `server.metrics_host:metrics_port`, when set.
    Workers share the port like the public one; any of them answers for all."""
    server = config.server
    if server.metrics_port is None:
        return None
    runner = GatewayRunner(build_metrics_app(app), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(
        runner, server.metrics_host, server.metrics_port, reuse_port=reuse_port
    ).start()
    log.info("metrics_listening", host=server.metrics_host, port=server.metrics_port)
    return runner


async def _reload(app: web.Application, config_path: str | None, alone: bool) -> None:
    if config_path is None:
        log.info("reload_skipped", reason="serving the embedded default; there is no file")
        return
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("reload_rejected", path=config_path, problems=exc.problems)
        return
    old = app[RUNTIME].gateway.config
    try:
        await reload(app, config)
    except StartupRefused as exc:  # e.g. the new state Redis may evict: the old one serves
        log.error("reload_rejected", path=config_path, problems=[str(exc)])
        return
    log.info("reloaded", path=config_path, models=sorted(config.models))
    if alone:  # with workers, the supervisor says it once for all of them
        _report_restart_needed(old, config)


def _report_restart_needed(old: Config, new: Config) -> None:
    changed = restart_needed(old, new)
    if changed:
        log.warning("restart_needed", changed=changed, effect="kept the old values until restart")


def serve(config_path: str | None, host: str, port: int, workers: int) -> int:
    """Check the port, log the summary, then run one worker here or supervise N."""
    config = load_or_default(config_path)
    configure_logging(config.logging.level, config.logging.format)
    problem = port_problem(host, port)
    if problem is not None:
        print(f"rerank-gateway: {problem}", file=sys.stderr)
        return 1
    facts = summary(config, version(), host, port, workers)
    log.info("starting", **facts)
    if facts["redis"].startswith("unreachable"):
        log.warning(
            "redis_unreachable",
            redis=facts["redis"],
            effect="serving anyway: cache misses, limits as limits.on_redis_error says",
        )
    for warning in scale_warnings(config, workers):
        log.warning("per_process_state", detail=warning)
    for warning in plain_http_warnings(config):
        log.warning("plain_http_upstream", detail=warning)
    if workers <= 1:
        try:
            run_worker(config_path, host, port, reuse_port=False)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    return Supervisor(config_path, config, host, port, workers).run()


class Supervisor:
    """N workers on one port; a worker that dies unasked is started again after a back-off
    (doubling from RESTART_BACKOFF_S up to MAX_BACKOFF_S, reset once a worker has lived
    STABLE_S), so one crash does not take the others down."""

    RESTART_BACKOFF_S = 0.5
    MAX_BACKOFF_S = 30.0
    STABLE_S = 60.0

    def __init__(
        self, config_path: str | None, config: Config, host: str, port: int, workers: int
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.args = (config_path, host, port, True)
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}  # slot -> process
        self.started_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.restart_at: dict[int, float] = {}  # slot -> when to start it again
        self.stopping = False
        self.worst = 0

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="rerank-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir  # read by each spawned worker at import
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signal)
        try:
            for slot in range(self.workers):
                self._start(slot)
            self._watch()
            return self.worst
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start(self, slot: int) -> None:
        proc = self.ctx.Process(target=run_worker, args=self.args, name=f"worker-{slot}")
        proc.start()
        self.procs[slot] = proc
        self.started_at[slot] = time.monotonic()

    def _signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._check_reload()
        else:
            self.stopping = True
            self.restart_at.clear()
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    def _check_reload(self) -> None:
        if self.config_path is None:
            return
        try:
            fresh = load_config(self.config_path)
        except ConfigError:
            return  # each worker logs the problems as reload_rejected
        _report_restart_needed(self.config, fresh)

    def _watch(self) -> None:
        from multiprocessing.connection import wait

        from prometheus_client import multiprocess

        while self.procs or self.restart_at:
            now = time.monotonic()
            for slot in [s for s, at in self.restart_at.items() if at <= now]:
                del self.restart_at[slot]
                if not self.stopping:
                    self._start(slot)
                    log.info("worker_restarted", worker=f"worker-{slot}")
            timeout = min((at - now for at in self.restart_at.values()), default=None)
            sentinels = {p.sentinel: slot for slot, p in self.procs.items()}
            ready = wait(list(sentinels), timeout=None if timeout is None else max(timeout, 0))
            for sentinel in ready:
                slot = sentinels[sentinel]  # type: ignore[index]
                proc = self.procs.pop(slot)
                proc.join()
                if proc.pid is not None:
                    multiprocess.mark_process_dead(proc.pid)
                code = proc.exitcode or 0
                if self.stopping:
                    # A worker still importing when our SIGTERM came dies of it: a clean stop.
                    if code != -signal.SIGTERM:
                        self.worst = max(self.worst, abs(code))
                    continue
                self._schedule_restart(slot, code)

    def _schedule_restart(self, slot: int, code: int) -> None:
        lived = time.monotonic() - self.started_at[slot]
        failures = 0 if lived >= self.STABLE_S else self.failures.get(slot, 0)
        self.failures[slot] = failures + 1
        delay = min(self.MAX_BACKOFF_S, self.RESTART_BACKOFF_S * 2**failures)
        self.restart_at[slot] = time.monotonic() + delay
        log.error(
            "worker_died",
            worker=f"worker-{slot}",
            exitcode=code,
            lived_s=round(lived, 1),
            restart_in_s=delay,
        )
