"""A private redis-server on a free loopback port, for tests that stop and restart Redis.

Never the shared server on 6379: that one stays up for everyone else's tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.servers import free_port


class OwnRedis:
    """`keep`: a directory for `dump.rdb`, which `SAVE` writes and a restart loads (the
    server never saves by itself)."""

    def __init__(self, keep: Path | None = None) -> None:
        self.keep = keep
        binary = shutil.which("redis-server")
        if binary is None:  # fail loudly: the suite needs redis-server installed
            raise RuntimeError("redis-server is not installed; these tests need it")
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                *(["--dir", str(self.keep), "--dbfilename", "dump.rdb"] if self.keep else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_listening()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def _wait_listening(self, timeout: float = 10.0) -> None:
        # Waits for readiness (a condition), not for a time.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        raise RuntimeError(f"redis-server did not listen on port {self.port}")
