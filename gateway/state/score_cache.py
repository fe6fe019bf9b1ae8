"""The score store a gateway keeps, and the per-model cache decisions, built from config.

`build_store` picks the store `cache.backend` names (memory, Redis, or both tiered);
`CacheSettings` resolves once which models share entries, how long they keep them and
which cannot be cached. The cache layer of the scoring chain (`gateway.chain.cache`)
uses both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Config
from gateway.config.model import StateConfig
from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics
from gateway.state import redis_client
from gateway.state.catalog import Catalog
from policies.cache import (
    Address,
    MemoryStore,
    RedisStore,
    RespConnection,
    RespStore,
    ScoreStore,
    SharedStore,
    TieredStore,
)
from policies.cache.resp import SCHEMES as RESP_SCHEMES
from policies.model_version import versions

_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class CacheSettings:
    """Per-model and per-team cache decisions, resolved once at startup."""

    families: dict[str, str]  # model -> family whose entries it shares
    ttl_s: dict[str, float]  # model -> how long its scores are kept
    isolated_teams: frozenset[str]  # teams whose entries nobody else sees
    uncacheable: frozenset[str]  # listwise models: scores depend on the whole batch
    # Teams told only what their own traffic could teach them (`hide_cross_team_hits`);
    # `private_default` is that setting for teams outside `known_teams` (API keys' teams
    # the config does not name).
    private_teams: frozenset[str] = frozenset()
    private_default: bool = False
    known_teams: frozenset[str] = frozenset()
    fleet_wait_s: float | None = None  # single flight across processes: longest wait
    fleet_poll_s: float = 0.01
    slot_tagged: bool = False  # Redis Cluster: one request's keys share a slot

    @classmethod
    def from_config(cls, config: Config, catalog: Catalog) -> CacheSettings:
        models = {name: m for name, m in config.models.items() if name in catalog.deployments}
        cache = config.cache
        return cls(
            families={
                name: family(m.cache_family or name, catalog, name) for name, m in models.items()
            },
            ttl_s={name: m.cache_ttl_s or config.cache.ttl_s for name, m in models.items()},
            isolated_teams=frozenset(
                name for name, team in config.teams.items() if team.cache == "isolated"
            ),
            uncacheable=frozenset(name for name in models if catalog.listwise(name)),
            private_teams=frozenset(
                name
                for name, team in config.teams.items()
                if team.cache == "shared"
                and (
                    cache.hide_cross_team_hits
                    if team.hide_cross_team_hits is None
                    else team.hide_cross_team_hits
                )
            ),
            private_default=cache.hide_cross_team_hits,
            known_teams=frozenset(config.teams),
            fleet_wait_s=(
                cache.fleet_max_wait_ms / 1000.0
                if cache.fleet_single_flight and cache.backend in ("redis", "tiered")
                else None
            ),
            fleet_poll_s=cache.fleet_poll_ms / 1000.0,
            slot_tagged=cache.backend in ("redis", "tiered")
            and getattr(redis_client.target(config.state), "mode", None) == "cluster",
        )



def family(base: str, catalog: Catalog, model: str) -> str:
    """`<cache_family or model name>@<versions its deployments serve>`: scores of two model
    versions never share entries, even under one name or one configured family."""
    served = versions(d.model for d in catalog.deployments.get(model, ()))
    return f"{base}@{'+'.join(served)}"


class ErrorReporter:
    """Counts every store failure; logs at most one warning per interval."""

    def __init__(
        self,
        metrics: Metrics,
        interval_s: float = _LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.warn = ThrottledWarning("cache_unavailable", interval_s, clock)

    def __call__(self, backend: str, exc: BaseException) -> None:
        self.metrics.cache_errors.labels(backend).inc()
        self.warn(
            backend=backend,
            error=exc.__class__.__name__,
            detail=str(exc)[:200],
            effect="treated as misses; retried after cache.redis_backoff_s",
        )


def build_store(config: Config, metrics: Metrics) -> ScoreStore | None:
    """The store `cache.backend` names, or None when caching is off."""
    cache = config.cache
    if cache.backend == "none":
        return None
    if cache.backend == "memory":
        return MemoryStore(cache.max_entries, cache.max_bytes)
    # cache.redis_url: the cache's own Redis (it may evict); else the state Redis.
    state = StateConfig(redis_url=cache.redis_url) if cache.redis_url else config.state
    where = redis_client.target(state)
    assert where is not None and state.redis_url  # the config's cross-check requires one
    shared: SharedStore
    if where.mode == "single" and state.redis_url.split(":", 1)[0] in RESP_SCHEMES:
        # One server: the lean store (one pipelined connection, replies decoded in C).
        shared = RespStore(
            RespConnection(Address.from_url(state.redis_url), cache.redis_timeout_s),
            key_prefix=cache.key_prefix,
            timeout_s=cache.redis_timeout_s,
            backoff_s=cache.redis_backoff_s,
            on_error=ErrorReporter(metrics),
        )
    else:  # Sentinel, Cluster, TLS: redis-py
        # No retries: a failed call is a miss, and retrying would only add latency.
        client = redis_client.connect(state, timeout_s=cache.redis_timeout_s)
        assert client is not None
        shared = RedisStore(
            client,
            key_prefix=cache.key_prefix,
            timeout_s=cache.redis_timeout_s,
            backoff_s=cache.redis_backoff_s,
            on_error=ErrorReporter(metrics),
        )
    if cache.backend == "redis":
        return shared
    return TieredStore(MemoryStore(cache.max_entries, cache.max_bytes), shared)
