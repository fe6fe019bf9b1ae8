"""Private Redis Cluster and Sentinel setups on free loopback ports, for tests.

`OwnCluster`: three masters started with `--cluster-enabled yes` and joined with
`redis-cli --cluster create` (no replicas). `OwnSentinel`: one master, one replica and one
sentinel (`redis-server --sentinel`, quorum 1), which `failover()` asks to promote the
replica (SENTINEL FAILOVER). Never the shared server on 6379. Every wait below is for a
condition (a port answering, the cluster state, the sentinel's view), not for a time.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

SERVICE = "gwmaster"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # fail loudly: these tests need the Redis binaries installed
        raise RuntimeError(f"{name} is not installed; these tests need it")
    return path


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + 10_000):  # the cluster bus listens on port + 10000
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def free_ports(count: int, bus: bool = False) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in ports or (bus and (port > 55_000 or not _port_pair_free(port))):
            continue
        ports.append(port)
    return ports


def _until(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class _Processes:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rg-redis-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(args), cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    def server(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            _binary("redis-server"),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            *extra,
        )  # fmt: skip
        _until(lambda: redis.Redis(port=port).ping(), f"redis-server on {port}")
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnCluster(_Processes):
    def __init__(self, masters: int = 3) -> None:
        super().__init__()
        self.ports = free_ports(masters, bus=True)

    @property
    def url(self) -> str:
        """The gateway's `state.redis_url` for this cluster (every node as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for port in self.ports:
            self.server(
                port,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
        subprocess.run(
            [
                _binary("redis-cli"), "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _until(self._healthy, "cluster_state:ok on every node")

    def _healthy(self) -> bool:
        for port in self.ports:
            info = redis.Redis(port=port).cluster("info")
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state not in ("ok", b"ok"):
                return False
        return True

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0])


class OwnSentinel(_Processes):
    """`safe=False`: Redis's defaults, without min-replicas-to-write (most setups)."""

    def __init__(self, safe: bool = True) -> None:
        super().__init__()
        self.safe = safe
        self.master_port, self.replica_port, self.sentinel_port = free_ports(3)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def start(self) -> None:
        # As docs/operations.md recommends: a master without a replica in sync refuses
        # writes, so an old master cannot take writes that its rejoining would erase.
        safe = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
        if not self.safe:
            safe = ()
        self.server(self.master_port, *safe)
        self.server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port), *safe)
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.spawn(_binary("redis-server"), str(conf), "--sentinel")
        _until(self._replica_known, "the sentinel to see the replica in sync")

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, decode_responses=True)

    def master_port_now(self) -> int:
        _, port = self.sentinel().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def _replica_known(self) -> bool:
        replicas = self.sentinel().sentinel_slaves(SERVICE)
        link = redis.Redis(port=self.replica_port).info("replication")
        return bool(replicas) and link.get("master_link_status") == "up" and self._writable()

    def _writable(self) -> bool:
        """The master counts a replica in sync, so min-replicas-to-write lets it take writes
        (it learns that from the replica's acknowledgements, a second or so after the link)."""
        info = redis.Redis(port=self.master_port_now()).info("replication")
        if not self.safe:
            return int(info.get("connected_slaves", 0)) >= 1
        return int(info.get("min_slaves_good_slaves", 0)) >= 1

    def wait_writable(self) -> None:
        _until(self._writable, "the master to count a replica in sync")

    def wait_old_master_rejoined(self) -> None:
        """Until the old master is a replica of the new one, in sync and counted by it (what
        it took after the switch, if anything, is then gone)."""

        def rejoined() -> bool:
            info = redis.Redis(port=self.master_port).info("replication")
            new = redis.Redis(port=self.master_port_now()).info("replication")
            return (
                info.get("role") == "slave"
                and info.get("master_link_status") == "up"
                # ...and the new master counts it (min-replicas-to-write lets it take writes)
                and int(new.get("min_slaves_good_slaves" if self.safe else "connected_slaves", 1))
                >= 1
            )

        _until(rejoined, "the old master to rejoin as a replica", timeout=60)

    def failover(self) -> None:
        """Promote the replica now (SENTINEL FAILOVER); returns once the sentinel names it."""
        old = self.master_port_now()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
        _until(lambda: self.master_port_now() != old, "the sentinel to name a new master")
        new = self.master_port_now()
        _until(
            lambda: redis.Redis(port=new).info("replication").get("role") == "master",
            "the new master to take writes",
        )
