"""The one place Redis clients are made: single server, Sentinel or Cluster, from `state`.

The score cache, the limits and usage stores, `/readyz` and the `usage` CLI all get their
client here, so every shared piece of state follows the same `state` settings:

- `redis://`, `rediss://` (TLS), `unix://`: one server (or one address that fails over).
- `redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`, or a
  `state.sentinel` block (service, sentinels, password, sentinel_password, db, tls): the
  client asks the sentinels for the current master, and again after a failover
  (`follow_master` polls them, so a master that moved is noticed within half a second).
- `redis+cluster://[:password@]host:port[,host:port...]`, or `state.redis_cluster: true`
  with a `redis://`/`rediss://` URL naming any node: a Redis Cluster client, which finds
  the slots' owners itself and follows MOVED/ASK redirections.

Callers choose how patient a client is: the cache wants no retry (a failed read is a miss),
the limits and usage stores retry a connection error a few times with back-off, which is
what lets a Sentinel failover pass without losing records (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.config.model import StateConfig
from gateway.observe.logs import log

Client: TypeAlias = "aioredis.Redis | RedisCluster"
Mode = Literal["single", "sentinel", "cluster"]
_DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True)
class Target:
    """Where Redis is, parsed from `state` (passwords kept out of `describe()`)."""

    mode: Mode
    url: str | None = None  # single, or cluster given as redis:// + redis_cluster
    nodes: list[tuple[str, int]] = field(default_factory=list)  # sentinels or cluster seeds
    service: str = ""
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    def describe(self) -> str:
        """For logs and messages: mode and addresses, never a password."""
        if self.mode == "single" and self.url:
            return redact(self.url)
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes) or redact(self.url or "")
        return f"{self.mode} {hosts}" + (f" service {self.service}" if self.service else "")


def target(state: StateConfig) -> Target | None:
    """The Redis that `state` names, or None when it names none."""
    url = state.redis_url
    if not url:
        return None
    if state.sentinel is not None:
        s = state.sentinel
        nodes = [_host_port(a, "sentinel") for a in s.sentinels]
        return Target(
            "sentinel", nodes=nodes, service=s.service, db=s.db, password=s.password,
            sentinel_password=s.sentinel_password, tls=s.tls,
        )  # fmt: skip
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("a redis+sentinel:// URL ends with /SERVICE_NAME[/DB]")
        return Target(
            "sentinel",
            nodes=[_host_port(a, "sentinel") for a in _netloc_hosts(parts.netloc)],
            service=path[0],
            db=int(path[1]) if len(path) > 1 else 0,
            password=password,
            sentinel_password=password,
            tls=parts.scheme.startswith("rediss"),
        )
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        return Target(
            "cluster",
            nodes=[_host_port(a, "cluster") for a in _netloc_hosts(parts.netloc)],
            password=password,
            tls=parts.scheme.startswith("rediss"),
        )
    if state.redis_cluster:
        return Target("cluster", url=url)
    return Target("single", url=url)


def connect(
    state: StateConfig,
    *,
    timeout_s: float,
    max_connections: int | None = None,
    retries: int = 0,
) -> Client | None:
    """A client for the Redis `state` names (None if none), each call bounded by `timeout_s`.

    `max_connections` (per process): callers beyond it queue for a connection (single
    server) instead of failing; None: no bound (the cache, whose calls are short and
    whose failures would read as misses).

    `retries` > 0: a connection error is retried with exponential back-off (25 ms doubling,
    at most 0.5 s), reconnecting to whatever is master by then."""
    where = target(state)
    if where is None:
        return None
    retry = (
        Retry(ExponentialBackoff(cap=0.5, base=0.025), retries, (RedisConnectionError,))
        if retries
        else Retry(NoBackoff(), 0)
    )
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
    }
    if retries:
        # Only connection errors are retried: a timed-out script may have run, and running
        # it again would count twice.
        common["retry_on_error"] = [RedisConnectionError]
    if where.mode == "single":
        assert where.url is not None
        if max_connections is None:
            return aioredis.Redis.from_url(where.url, **common)
        # A blocking pool: under a burst, requests queue briefly for a connection instead of
        # failing with "too many connections" (the default pool's behaviour past its size).
        pool = aioredis.BlockingConnectionPool.from_url(
            where.url, max_connections=max_connections, timeout=timeout_s, **common
        )
        return aioredis.Redis(connection_pool=pool)
    if max_connections is not None:
        common["max_connections"] = max_connections
    if where.mode == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        if where.sentinel_password:
            sentinel_kwargs["password"] = where.sentinel_password
        sentinel = Sentinel(
            where.nodes,
            sentinel_kwargs=sentinel_kwargs,
            password=where.password,
            db=where.db,
            ssl=where.tls,
            **common,
        )
        return sentinel.master_for(where.service)
    # The cluster client follows MOVED/ASK itself and, with retries, re-reads the slot map
    # after a connection error (a node failed over).
    cluster_common = {k: v for k, v in common.items() if k != "retry_on_error"}
    if where.url is not None:
        return RedisCluster.from_url(where.url, **cluster_common)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in where.nodes],
        password=where.password,
        ssl=where.tls,
        **cluster_common,
    )


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


async def warm_up(client: object, timeout_s: float = 2.0) -> None:
    """Load a cluster client's slot map now; a failure is left for the first call to retry."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(client.initialize(), timeout_s)


async def follow_master(client: object, interval_s: float = 0.5) -> None:
    """Sentinel: ask the sentinels every `interval_s` where the master is, and when it moved,
    drop every connection (in use too: their calls fail, and are retried, on the new one).

    Without this a client keeps writing to the old master after a failover for as long as
    that server still takes writes (a manual SENTINEL FAILOVER leaves it running), and what
    it took is erased when it rejoins as a replica. Runs until cancelled; None for others."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return
    while True:
        await asyncio.sleep(interval_s)
        try:
            address = await pool.sentinel_manager.discover_master(pool.service_name)
        except (RedisError, OSError, TimeoutError):
            continue  # no sentinel answers: keep the connections we have
        if pool.master_address is not None and address != pool.master_address:
            log.warning(
                "redis_master_moved",
                service=pool.service_name,
                master=f"{address[0]}:{address[1]}",
                effect="reconnecting to the new master",
            )
            pool.master_address = address
            await pool.disconnect(inuse_connections=True)
        elif pool.master_address is None:
            pool.master_address = address


async def watch_incarnation(
    client: object,
    prefix: str,
    on_new: Callable[[str], Awaitable[None]],
    interval_s: float = 1.0,
) -> None:
    """Tell `on_new` when the Redis the client writes to is a new incarnation: another
    server took over (a Sentinel failover), or the server restarted, perhaps from an old
    snapshot. Such a Redis may lack recent writes that are not lost from the ledger.

    Each check compares the server's run id and replication id with the pair the last
    check stored in Redis (`<prefix>incarnation`, swapped with SET ... GET), so exactly one
    replica sees each change. A server that is not a master (a demoted one still being
    written to) is reported by `follow_master`'s reconnect instead. Single server and
    Sentinel only (a cluster has one incarnation per shard). Runs until cancelled."""
    if not isinstance(client, aioredis.Redis):
        return
    key = f"{prefix}incarnation"
    while True:
        await asyncio.sleep(interval_s)
        try:
            server = await client.info("server")
            replication = await client.info("replication")
            if replication.get("role") != "master":
                continue
            now = f"{server['run_id']}:{replication['master_replid']}"
            before = await client.set(key, now, get=True)
        except (RedisError, OSError, TimeoutError, KeyError):
            continue
        before = before.decode() if isinstance(before, bytes) else before
        if before is not None and before != now:
            log.warning(
                "redis_incarnation_changed",
                effect="budget counters are seeded again from the usage ledger",
            )
            try:
                await on_new("the state Redis changed (failover or restart)")
            except Exception as exc:  # a background task: report, keep watching
                log.error("budget_forget_failed", error=exc.__class__.__name__)


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _netloc_hosts(netloc: str) -> list[str]:
    return [h for h in netloc.rsplit("@", 1)[-1].split(",") if h]


def _host_port(address: str, mode: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, _DEFAULT_PORTS[mode]
    return host.strip("[]"), int(port)
