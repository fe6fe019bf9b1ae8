"""The gateway as a separate process, the way operators run it, for lifecycle tests."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.paths import ROOT
from tests.support.servers import free_port


class GatewayProcess:
    """`python -m gateway serve ...` with its JSON log lines collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_event(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """Block until the process logs `event` (earlier lines are kept in `seen`)."""
        for entry in self.seen:
            if entry["event"] == event:
                return entry
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} log line; output so far:\n{''.join(self.raw)}")
            try:
                entry = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(entry)
            if entry["event"] == event:
                return entry

    def collect(self, event: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Block until `count` lines of `event` were logged; return them."""
        deadline = time.monotonic() + timeout
        while len(found := [e for e in self.seen if e["event"] == event]) < count:
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{len(found)} of {count} {event!r} lines") from None
        return found

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"gateway did not come up:\n{''.join(self.raw)}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def gateway_processes(
    config: Path,
    logs: Path,
    count: int = 2,
    env: Mapping[str, str] | None = None,
    source: Path = ROOT,
) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str]]]:
    """`count` gateway processes serving `config` (replicas sharing its Redis), each
    healthy before the block and stopped after it; logs go to `logs`/gateway-N.log.
    `source`: the checkout whose code they run (a benchmark compares two)."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(count):
            port, log = free_port(), logs / f"gateway-{i}.log"
            command = ["serve", "--config", str(config), "--port", str(port)]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", *command],
                        cwd=source,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=None if env is None else dict(env),
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
            _wait_healthy(urls[-1], procs[-1], log)
        yield procs, urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until this process logged that it listens and the port answers."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if '"listening"' in log.read_text() and httpx.get(url + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gateway at {url} did not start:\n{log.read_text()}")
        time.sleep(0.05)


def write_config(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data))
