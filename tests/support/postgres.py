"""PostgreSQL for the ledger tests: a schema of one's own on the shared server, or a
private server that a test may stop and start.

The shared server (127.0.0.1:5432, database `test`, trust auth) must be running: tests
fail, not skip, without it (`make test` and `.ci/run` start it). `OwnPostgres` runs
`initdb` and `postgres` from Debian's package as the `postgres` user in a temporary
directory on a free loopback port. Every wait is for a condition, not for a time.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.servers import free_port

SHARED_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def new_schema() -> str:
    return f"ledger_test_{uuid.uuid4().hex[:12]}"


async def execute(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def check_shared() -> None:
    """Fail loudly when the shared server is not there."""
    try:
        asyncio.run(execute(SHARED_DSN, "SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL must be running at {SHARED_DSN} for these tests ({exc}); run `make test`"
        ) from exc


def drop_schema(dsn: str, schema: str) -> None:
    asyncio.run(execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:  # fail loudly: these tests need Debian's postgresql package
        raise RuntimeError(f"{name} is not installed (Debian's postgresql package); needed here")
    return found[-1]


def _as_postgres(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Run as the `postgres` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.Popen(args, **kwargs)


class OwnPostgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rg-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        init = _as_postgres(
            [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
             "UTF8", "--no-sync"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = init.communicate(timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {err.decode(errors='replace')[-500:]}")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.proc = _as_postgres(
            [_binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_ready()

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, what is committed stays."""
        if self.proc is not None:
            ctl = _as_postgres(
                [_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            ctl.wait(60)
            self.proc.wait(30)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until it accepts connections (pg_isready: usable inside a running event loop)."""
        ready = [_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "postgres exited"
            if subprocess.run(ready, check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not accept connections on port {self.port}")
